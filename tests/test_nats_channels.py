"""nats://: channels as subjects by one reversible rule, exact delivery, one prefix per bus."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import pytest
from _nats import NatsNode
from hypothesis import given
from hypothesis import strategies as st

from shellbot import Context
from shellbot._codec import HEADER
from shellbot._transports.nats import Naming, decode_token, encode_token
from shellbot.bus import Bus, Publisher

# Channels a NATS subject could not carry as they are, and their neighbours.
TRICKY = [
    "chan",
    "channel",
    "a b",
    "tab\there",
    ".lead",
    "trail.",
    "..",
    "a..b",
    "*",
    ">",
    "a.*",
    "votes.>",
    "déjà vu",
    "投票.✓",
    "%",
    "%25",
    "$SYS",
    "x" * 300,
]


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


@given(st.text(min_size=1))
def test_every_channel_has_a_subject_and_back(channel: str) -> None:
    naming = Naming("shellbot")
    topic = channel.encode("utf-8") + b"\xff"
    subject = naming.subject(topic)
    assert subject.startswith("shellbot.c.")
    # A NATS subject: no whitespace, no empty token, wildcards never as a token.
    tokens = subject.split(".")
    assert all(tokens) and not any(token in ("*", ">") for token in tokens)
    assert not any(character.isspace() for character in subject) and subject.isascii()
    if naming.carries(topic):  # a long channel's subject: the message carries the topic
        assert naming.carried(subject.encode(), topic + b"body") == (topic, b"body")
    else:
        assert naming.topic(subject.encode()) == topic


@given(st.text())
def test_tokens_decode_only_as_they_were_encoded(text: str) -> None:
    assert decode_token(encode_token(text)) == text
    try:
        decoded = decode_token(text)
    except ValueError:
        return
    assert encode_token(decoded) == text  # one spelling per piece: foreign ones are refused


def test_subjects_the_rule_never_writes_name_no_channel() -> None:
    naming = Naming("shellbot")
    for subject in [
        "shellbot.c.%61",
        "shellbot.c.%zz",
        "shellbot.c.a%2",
        "shellbot.c.a b",
        "shellbot.c.é",
        "other.c.a",
        "shellbot.x.a",
        "shellbot.c.%FF",
    ]:
        assert naming.topic(subject.encode()) is None, subject


def test_each_tricky_channel_reaches_its_own_subscribers_alone(
    nats_bus: Bus, nats_publisher: Publisher
) -> None:
    subscribers = {channel: nats_bus.subscribe(channel) for channel in TRICKY}
    everything = nats_bus.subscribe("")
    for subscriber in [*subscribers.values(), everything]:
        assert subscriber.wait_ready(timeout=5.0)
    for channel in TRICKY:
        nats_publisher.put(channel, {"on": channel})
    for channel, subscriber in subscribers.items():
        received = subscriber.receive(block=True, timeout=5.0)
        assert received is not None and (received.channel, received.message) == (
            channel,
            {"on": channel},
        )
    seen = [everything.receive(block=True, timeout=5.0) for _ in TRICKY]
    assert [message.channel for message in seen if message] == TRICKY
    nats_publisher.put("chan", "end")  # behind everything else from this publisher
    assert subscribers["chan"].get(block=True, timeout=5.0) == "end"
    for channel, subscriber in subscribers.items():
        if channel != "chan":
            assert subscriber.get() is None, channel
    assert all(s.stats["dropped"] == 0 for s in subscribers.values())


def _publish_plain(url: str, subject: str, payload: bytes) -> None:
    async def publish() -> None:
        client = await nats.connect(url)
        await client.publish(subject, payload)
        await client.flush()
        await client.close()

    asyncio.run(publish())


def test_everything_is_this_bus_alone(nats_server: NatsNode, nats_bus: Bus) -> None:
    other = Bus(Context({"bus": {"address": nats_server.url, "nats": {"prefix": "team.other"}}}))
    mine, theirs = nats_bus.subscribe(""), other.subscribe("")
    assert mine.wait_ready(timeout=5.0) and theirs.wait_ready(timeout=5.0)
    publisher, other_publisher = nats_bus.publish(), other.publish()
    publisher.start()
    other_publisher.start()
    try:
        _publish_plain(nats_server.url, "orders.new", b'{"not": "ours"}')
        other_publisher.put("x", "theirs")
        publisher.put("x", "mine")
        assert mine.get(block=True, timeout=5.0) == "mine"
        assert theirs.get(block=True, timeout=5.0) == "theirs"
        publisher.put("x", "last")
        other_publisher.put("x", "last")
        assert mine.get(block=True, timeout=5.0) == "last"
        assert theirs.get(block=True, timeout=5.0) == "last"
        assert mine.stats["dropped"] == 0 and theirs.stats["dropped"] == 0
    finally:
        publisher.stop()
        other_publisher.stop()


def _server_subjects(node: NatsNode) -> list[str]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{node.monitor_port}/subsz?subs=1", timeout=2.0
    ) as answer:
        return [entry["subject"] for entry in json.load(answer).get("subscriptions_list", [])]


def test_patterns_are_matched_by_the_server(
    nats_server: NatsNode, nats_bus: Bus, nats_publisher: Publisher
) -> None:
    subscriber = nats_bus.subscribe(["votes.*", "polls.>"], pattern=True)
    assert subscriber.wait_ready(timeout=5.0)
    subjects = _server_subjects(nats_server)
    assert "shellbot.c.votes.*" in subjects and "shellbot.c.polls.>" in subjects
    assert "shellbot.c.>" not in subjects  # no subscription to everything, filtered here
    for channel in ["votes.alice", "votes.alice.final", "polls.q.1", "polls", "other"]:
        nats_publisher.put(channel, channel)
    nats_publisher.put("votes.end", "votes.end")
    received = []
    while (message := subscriber.get(block=True, timeout=5.0)) != "votes.end":
        assert message is not None
        received.append(message)
    assert received == ["votes.alice", "polls.q.1"]


def test_a_plain_nats_client_reads_a_channel(
    nats_server: NatsNode, nats_bus: Bus, nats_publisher: Publisher
) -> None:
    """What the On NATS page tells a program that speaks NATS but not the bus."""

    async def read_one() -> bytes:
        client = await nats.connect(nats_server.url)
        subscription = await client.subscribe("shellbot.c.votes.alice")
        await client.flush()
        ready.set()
        message = await subscription.next_msg(timeout=10.0)
        await client.close()
        return bytes(message.data)

    import threading

    ready = threading.Event()
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(asyncio.run(read_one())))
    reader.start()
    assert ready.wait(10.0)
    nats_publisher.put("votes.alice", {"ballot": "pizza"})
    reader.join(15.0)
    (payload,) = result
    sender, sequence = HEADER.unpack_from(payload)
    assert sequence == 1 and sender != 0
    assert orjson.loads(payload[HEADER.size :]) == {"ballot": "pizza"}


def test_without_nats_py_the_error_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "nats").mkdir()
    (tmp_path / "nats" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nats'\", name='nats')\n"
    )
    program = (
        "from shellbot import Context\nfrom shellbot.bus import Bus\n"
        "from shellbot.errors import ConfigurationError\n"
        "try:\n    Bus(Context({'bus': {'address': 'nats://127.0.0.1:1'}})).subscribe('x')\n"
        "except ConfigurationError as error:\n    print(error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert "pip install '.[nats]'" in completed.stdout, completed.stderr
    assert "pip install shellbot" not in completed.stdout
