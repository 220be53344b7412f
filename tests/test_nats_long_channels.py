"""nats://: any channel, however long, is carried as on every other transport.

A subject is one protocol line, and the server closes a connection whose line passes
its max_control_line (4 KiB by default): a long channel travels on its digest's
subject, the channel in the payload, checked on arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from _durable import durable_bus
from _nats import NatsNode
from hypothesis import given, settings
from hypothesis import strategies as st

from shellbot import Context, errors
from shellbot._codec import HEADER
from shellbot._transports.nats.naming import CARRIED, LONG_SUBJECT, Naming
from shellbot.bus import Bus, Publisher

LONG = {
    "5000 ASCII": "x" * 5000,
    "700 é": "é" * 700,
    "100 KB": "y" * 100_000,
    "dotted": ".".join(["piece"] * 1000),
}


@pytest.fixture
def nats_bus(nats_server: NatsNode) -> Bus:
    bus = Bus(Context({"bus": {"address": nats_server.url}}))
    bus.check()
    return bus


@pytest.fixture
def nats_publisher(nats_bus: Bus) -> Iterator[Publisher]:
    publisher = nats_bus.publish()
    publisher.start()
    yield publisher
    publisher.stop()


def _publish_plain(url: str, subject: str, payload: bytes) -> None:
    async def publish() -> None:
        client = await nats.connect(url)
        await client.publish(subject, payload)
        await client.flush()
        await client.close()

    asyncio.run(publish())


@pytest.mark.parametrize("channel", list(LONG.values()), ids=list(LONG))
def test_a_long_channel_round_trips_alone(
    nats_bus: Bus, nats_publisher: Publisher, channel: str
) -> None:
    # Its neighbour shares all but its last character, so all but the digest's tail.
    neighbour = channel[:-1] + "z"
    mine, theirs = nats_bus.subscribe(channel), nats_bus.subscribe(neighbour)
    everything = nats_bus.subscribe("")
    for subscriber in (mine, theirs, everything):
        assert subscriber.wait_ready(timeout=10.0)
    for number in range(3):
        nats_publisher.put(channel, {"n": number})
        nats_publisher.put(neighbour, {"other": number})
    nats_publisher.put("short", "after")  # the connection is alive behind them
    assert [mine.get(block=True, timeout=10.0) for _ in range(3)] == [{"n": n} for n in range(3)]
    assert [theirs.get(block=True, timeout=10.0) for _ in range(3)] == [
        {"other": n} for n in range(3)
    ]
    seen = [everything.receive(block=True, timeout=10.0) for _ in range(7)]
    assert [(m.channel, m.message) for m in seen if m] == [
        pair
        for number in range(3)
        for pair in ((channel, {"n": number}), (neighbour, {"other": number}))
    ] + [("short", "after")]
    assert mine.get(block=True, timeout=0.3) is None and theirs.get() is None
    for subscriber in (mine, theirs, everything):
        assert subscriber.stats["dropped"] == 0 and subscriber.stats["missed"] == 0
        subscriber.close()


def test_a_pattern_matches_long_channels_too(nats_bus: Bus, nats_publisher: Publisher) -> None:
    """The server cannot match a pattern inside a digest: the subscriber matches long
    channels itself, exactly as the server matches the others."""
    tail = "t" * 5000
    subscriber = nats_bus.subscribe(["votes.*", "polls.>", tail[:2000] + ".*"], pattern=True)
    assert subscriber.wait_ready(timeout=10.0)
    channels = [
        "votes." + tail,  # matched by votes.*
        "votes." + tail + ".deeper",  # not: '*' is one token
        "polls." + tail + ".x",  # matched by polls.>
        "other." + tail,  # not
        tail[:2000] + ".end",  # matched by the long pattern
        "votes.short",  # matched, by the server
    ]
    for channel in channels:
        nats_publisher.put(channel, channel)
    nats_publisher.put("votes.end", "end")
    received = []
    while (message := subscriber.get(block=True, timeout=10.0)) != "end":
        assert message is not None
        received.append(message)
    assert received == [channels[0], channels[2], channels[4], channels[5]]
    assert subscriber.stats["dropped"] == 0


def test_a_forged_or_bare_message_on_a_long_subject_is_dropped_and_counted(
    nats_server: NatsNode, nats_bus: Bus, nats_publisher: Publisher
) -> None:
    channel, other = "a" * 5000, "b" * 5000
    subscriber = nats_bus.subscribe(channel)
    everything = nats_bus.subscribe("")
    assert subscriber.wait_ready(timeout=10.0) and everything.wait_ready(timeout=10.0)
    naming = Naming("shellbot")
    subject = naming.subject(channel.encode() + b"\xff")
    assert len(subject) < 100 and naming.carries(channel.encode() + b"\xff")
    body = HEADER.pack(7, 1) + b'"forged"'
    # Another channel claimed on this one's subject, and no channel at all.
    _publish_plain(nats_server.url, subject, other.encode() + b"\xff" + body)
    _publish_plain(nats_server.url, subject, body)
    nats_publisher.put(channel, "real")
    assert subscriber.get(block=True, timeout=10.0) == "real"
    assert everything.get(block=True, timeout=10.0) == "real"
    assert subscriber.stats["dropped"] == 2 and everything.stats["dropped"] == 2
    assert subscriber.get(block=True, timeout=0.3) is None


def test_long_and_short_subjects_never_meet() -> None:
    naming = Naming("shellbot")
    under = "u" * (LONG_SUBJECT - len("shellbot.c."))
    over = under + "u"
    assert naming.subject(under.encode() + b"\xff") == "shellbot.c." + under
    long_subject = naming.subject(over.encode() + b"\xff")
    assert long_subject.startswith("shellbot.c.%long.")
    # What a channel named like a digest's subject is written as: another subject.
    lookalike = long_subject[len("shellbot.c.") :]
    assert naming.subject(lookalike.encode() + b"\xff") != long_subject
    assert naming.topic(naming.subject(lookalike.encode() + b"\xff").encode()) == (
        lookalike.encode() + b"\xff"
    )
    for bad in ("shellbot.c.%long.xyz", "shellbot.c.%long." + "A" * 32, "shellbot.c.%long"):
        assert naming.topic(bad.encode()) is None, bad


def test_the_largest_message_on_a_long_channel_leaves_room_for_the_channel(
    servers: object, caplog: pytest.LogCaptureFixture
) -> None:
    node = servers(extra="max_payload: 8192")  # type: ignore[operator]
    bus = Bus(Context({"bus": {"address": node.url}}))
    channel = "c" * 3000
    subscriber = bus.subscribe(channel)
    assert subscriber.wait_ready(timeout=10.0)
    publisher = bus.publish()
    largest = 8192 - HEADER.size - len(channel.encode()) - 1 - 2  # the JSON string's quotes
    publisher.put(channel, "m" * largest)
    assert subscriber.get(block=True, timeout=10.0) == "m" * largest
    with pytest.raises(errors.MessageTooLarge, match="the channel it carries"):
        publisher.put(channel, "m" * (largest + 1))
    assert subscriber.stats["dropped"] == 0
    subscriber.close()


def test_a_message_over_max_payload_put_before_the_connection_is_counted_and_named(
    servers: object, caplog: pytest.LogCaptureFixture
) -> None:
    node = servers(extra="max_payload: 4096")  # type: ignore[operator]
    node.stop()  # put() cannot know the server's limit yet
    bus = Bus(Context({"bus": {"address": node.url, "start_timeout": 20.0}}))
    publisher = bus.publish()
    with caplog.at_level(logging.WARNING, logger="shellbot.bus"):
        publisher.put("big.one", "m" * 5000)
        publisher.put("small", "fits")
        node.start()
        subscriber = bus.subscribe("small")
        assert subscriber.wait_ready(timeout=20.0)
        publisher.put("small", "after")
        got = subscriber.get(block=True, timeout=10.0)
        if got == "fits":  # it may have left after the subscription was made
            got = subscriber.get(block=True, timeout=10.0)
        assert got == "after"
    assert publisher.stats["oversized"] == 1
    (line,) = [r.getMessage() for r in caplog.records if "max_payload" in r.getMessage()]
    assert "'big.one'" in line and "4096" in line
    subscriber.close()
    publisher.stop()


def test_long_channels_are_durable_too(jetstream: NatsNode) -> None:
    bus = durable_bus(jetstream.url)
    channel, neighbour = "d" * 5000, "d" * 4999 + "e"
    # The longest subject the rule writes as it is: a filter in the API's subject too.
    edge = "e" * (LONG_SUBJECT - len("shellbot.c."))
    edgy = bus.subscribe(edge, durable="edge")
    assert edgy.wait_ready(10.0)
    edgy.close()
    exact = bus.subscribe(channel, durable="exact")
    patterned = bus.subscribe(["x.*", ">"], pattern=True, durable="patterned")
    everything = bus.subscribe("", durable="everything")
    for subscriber in (exact, patterned, everything):
        assert subscriber.wait_ready(10.0)
        subscriber.close()
    publisher = bus.publish()
    for number in range(3):
        publisher.put(channel, number)
        publisher.put(neighbour, -number)
    publisher.put("x." + channel, "x")
    publisher.put(edge, "edge")
    assert publisher.stop()
    edgy = bus.subscribe(edge, durable="edge")
    assert edgy.get(block=True, timeout=10.0) == "edge"
    edgy.close(forget=True)
    exact = bus.subscribe(channel, durable="exact")
    patterned = bus.subscribe(["x.*", ">"], pattern=True, durable="patterned")
    everything = bus.subscribe("", durable="everything")
    assert [exact.get(block=True, timeout=10.0) for _ in range(3)] == [0, 1, 2]
    assert exact.get(block=True, timeout=0.5) is None
    expected = [0, 0, 1, -1, 2, -2, "x", "edge"]
    for subscriber in (patterned, everything):
        assert [subscriber.get(block=True, timeout=10.0) for _ in expected] == expected
        assert subscriber.get(block=True, timeout=0.3) is None
    for subscriber in (exact, patterned, everything):
        assert subscriber.stats["dropped"] == 0
        subscriber.close(forget=True)


def _put_until_refused(publisher: Publisher, timeout: float = 10.0) -> errors.TransportError:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            publisher.put("ok", "probe")
        except errors.TransportError as error:
            return error
        time.sleep(0.02)
    raise AssertionError("put() never said that the connection was closed")


def test_a_connection_the_server_closed_is_said_by_every_party_and_made_anew(
    servers: object,
) -> None:
    """A server set below the bus's LONG_SUBJECT closes the connection on a subject
    longer than its max_control_line: said once by the next put(), get() and
    wait_ready(), with the server's reason; the bus connects again."""
    node = servers(extra="max_control_line: 512")  # type: ignore[operator]
    bus = Bus(Context({"bus": {"address": node.url}}))
    reader, waiter = bus.subscribe("ok"), bus.subscribe("ok")
    assert reader.wait_ready(timeout=10.0) and waiter.wait_ready(timeout=10.0)
    publisher = bus.publish()
    publisher.put("m" * 600, "too long a line for this server")
    error = _put_until_refused(publisher)
    assert "maximum control line exceeded" in str(error)
    assert "nats-server runs" not in str(error)
    with pytest.raises(errors.TransportError, match="maximum control line exceeded"):
        while reader.get(block=True, timeout=10.0) == "probe":
            pass  # what arrived before the close comes first
    with pytest.raises(errors.TransportError, match="maximum control line exceeded"):
        waiter.wait_ready(timeout=10.0)
    # Said once each: the bus connected again, subscriptions and all.
    assert waiter.wait_ready(timeout=10.0)
    publisher.put("ok", "again")
    while (message := reader.get(block=True, timeout=10.0)) == "probe":
        pass
    assert message == "again"
    reader.close()
    waiter.close()
    publisher.stop()


@pytest.mark.parametrize("command", ["publish", "spy"])
def test_the_cli_says_why_the_connection_was_closed(servers: object, command: str) -> None:
    node = servers(extra="max_control_line: 512")  # type: ignore[operator]
    arguments = ["m" * 600, "1"] if command == "publish" else ["m" * 600]
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.cli", command, "--address", node.url, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1, completed
    last = completed.stderr.splitlines()[-1]
    assert last.startswith("shellbot-bus: error:") and "maximum control line exceeded" in last


def test_a_subscription_the_server_refuses_at_every_connection_backs_off(
    servers: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Connecting anew replays the subscriptions: one the server closes the connection
    for each time is said each time, at a pace that halves, not 10 times a second."""
    node = servers(extra="max_control_line: 512")  # type: ignore[operator]
    bus = Bus(Context({"bus": {"address": node.url}}))
    with caplog.at_level(logging.WARNING, logger="shellbot.bus"):
        subscriber = bus.subscribe("m" * 600)
        deadline = time.monotonic() + 4.0
        reports = 0
        while time.monotonic() < deadline:
            try:
                subscriber.get(block=True, timeout=max(0.01, deadline - time.monotonic()))
            except errors.TransportError:
                reports += 1
        subscriber.close()
    closed = [r for r in caplog.records if "maximum control line exceeded" in r.getMessage()]
    # 0.1, 0.2, 0.4, 0.8, 1.6 s between attempts: 5 or 6 closures in 4 s, not 40.
    assert 2 <= len(closed) <= 7 and 1 <= reports <= len(closed)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=300, max_size=2000))
def test_every_long_channel_has_a_short_subject_and_back(channel: str) -> None:
    naming = Naming("shellbot")
    topic = channel.encode("utf-8") + b"\xff"
    subject = naming.subject(topic)
    assert len(subject) <= LONG_SUBJECT
    if naming.carries(topic):
        assert naming.topic(subject.encode()) is CARRIED
        assert naming.carried(subject.encode(), topic + b"body") == (topic, b"body")
    else:
        assert naming.topic(subject.encode()) == topic


def test_a_durable_subscriber_goes_on_after_the_server_closed_the_connection(
    tmp_path: Path,
) -> None:
    node = NatsNode(tmp_path / "js", jetstream=True, extra="max_control_line: 512")
    node.start()
    try:
        bus = durable_bus(node.url, send_timeout=3.0)
        subscriber = bus.subscribe("ok", durable="goes-on")
        assert subscriber.wait_ready(10.0)
        publisher = bus.publish()
        publisher.put("ok", "before")
        assert subscriber.get(block=True, timeout=10.0) == "before"
        publisher.put("m" * 600, "too long a line for this server")
        _put_until_refused(publisher)
        # Stored publishing sends the run again until the server stores it or
        # bus.send_timeout passes: each time, the server closes the connection again.
        reports = 0
        received = []
        deadline = time.monotonic() + 30.0
        while "after" not in received and time.monotonic() < deadline:
            try:
                if (message := subscriber.get(block=True, timeout=1.0)) is not None:
                    received.append(message)
                publisher.put("ok", "after")
            except errors.TransportError as error:
                assert "maximum control line exceeded" in str(error)
                reports += 1
        assert reports >= 1 and "after" in received
        with contextlib.suppress(errors.TransportError):  # a closure since the last put()
            publisher.stop()
        # The run the server closed on, and any that went down with it too often: counted.
        assert publisher.stats["not_stored"] >= 1
        subscriber.close(forget=True)
    finally:
        node.stop()
