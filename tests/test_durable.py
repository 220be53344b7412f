"""Durable subscribers and stored publishing on NATS JetStream, on servers of our own."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _durable import durable_bus, durable_publisher, durable_reader, read_log
from _nats import LaggingRelay, NatsNode
from conftest import eventually

from shellbot import Context, errors
from shellbot.bus import Bus

spawn = multiprocessing.get_context("spawn")


def stream_state(node: NatsNode, stream: str = "SHELLBOT") -> dict[str, Any]:
    details = node.monitor("/jsz?streams=true&consumers=true&config=true")["account_details"]
    for account in details:
        for detail in account.get("stream_detail", []):
            if detail["name"] == stream:
                return dict(detail)
    return {}


def drain(subscriber: Any, timeout: float = 2.0) -> list[Any]:
    """What arrives until ``timeout`` seconds pass without a message."""
    got = []
    while (message := subscriber.get(block=True, timeout=timeout)) is not None:
        got.append(message)
    return got


def wait_report(reports: Any, kind: str, timeout: float = 60.0) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = reports.get(timeout=max(0.1, deadline - time.monotonic()))
        if report[0] == kind:
            return tuple(report)
        assert report[0] not in ("silent",), report
    raise AssertionError(f"no {kind!r} report within {timeout} s")


# -- the API --------------------------------------------------------------------------


def test_a_durable_subscriber_made_again_receives_what_was_published_meanwhile(
    jetstream: NatsNode,
) -> None:
    bus = durable_bus(jetstream.url)
    publisher = bus.publish()
    first = bus.subscribe(["ballots", "other"], durable="counter")
    assert first.wait_ready(10.0)
    for number in range(10):
        publisher.put("ballots", number)
    assert [first.get(block=True, timeout=5.0) for _ in range(10)] == list(range(10))
    first.close()
    for number in range(10, 20):
        publisher.put("ballots", number)
        publisher.put("other", -number)
    assert publisher.stop()
    second = bus.subscribe(["ballots", "other"], durable="counter")
    assert second.wait_ready(10.0)
    got = drain(second)
    # In order per publisher, across its channels; nothing handed before comes again.
    assert got == [value for number in range(10, 20) for value in (number, -number)]
    assert second.stats["duplicates"] == 0
    publisher.put("ballots", "live")
    assert second.get(block=True, timeout=5.0) == "live"
    second.close(forget=True)


def test_without_durable_nothing_changes_and_nothing_is_kept(jetstream: NatsNode) -> None:
    bus = Bus(Context({"bus": {"address": jetstream.url}}))
    subscriber = bus.subscribe("plain")
    assert subscriber.wait_ready(10.0)
    bus.publish().put("plain", 1)
    assert subscriber.get(block=True, timeout=5.0) == 1
    assert "duplicates" not in subscriber.stats
    assert stream_state(jetstream) == {}  # no stream is made for a bus that asks none
    subscriber.close()


def test_patterns_and_every_channel_work_durably(jetstream: NatsNode) -> None:
    bus = durable_bus(jetstream.url)
    patterned = bus.subscribe("votes.*", pattern=True, durable="patterned")
    everything = bus.subscribe("", durable="everything")
    assert patterned.wait_ready(10.0) and everything.wait_ready(10.0)
    patterned.close()
    everything.close()
    publisher = bus.publish()
    for channel in ("votes.a", "votes.b", "votes.a.deep", "other"):
        publisher.put(channel, channel)
    assert publisher.stop()
    patterned = bus.subscribe("votes.*", pattern=True, durable="patterned")
    everything = bus.subscribe("", durable="everything")
    assert drain(patterned) == ["votes.a", "votes.b"]
    assert drain(everything) == ["votes.a", "votes.b", "votes.a.deep", "other"]
    patterned.close(forget=True)
    everything.close(forget=True)


def test_a_subscriber_closed_with_forget_leaves_nothing_on_the_server(
    jetstream: NatsNode,
) -> None:
    bus = durable_bus(jetstream.url)
    subscriber = bus.subscribe("forgotten", durable="forgotten")
    assert subscriber.wait_ready(10.0)
    assert [c["name"] for c in stream_state(jetstream)["consumer_detail"]] == ["forgotten"]
    subscriber.close(forget=True)
    assert stream_state(jetstream).get("consumer_detail", []) == []
    bus.publish().put("forgotten", "after")
    again = bus.subscribe("forgotten", durable="forgotten")
    assert again.wait_ready(10.0)
    assert again.get(block=True, timeout=1.0) is None  # a new position: nothing old
    again.close(forget=True)
    with pytest.raises(ValueError, match="durable subscriber"):
        bus.subscribe("plain").close(forget=True)


@pytest.mark.parametrize("name", ["", "with.dot", "with space", "x" * 65, 7])
def test_a_name_jetstream_cannot_take_is_refused_at_the_call(
    jetstream: NatsNode, name: Any
) -> None:
    with pytest.raises(errors.ConfigurationError, match="durable= takes a name"):
        durable_bus(jetstream.url).subscribe("x", durable=name)


def test_durable_on_a_bus_that_stores_nothing_is_refused_at_the_call(tcp_address: str) -> None:
    plain = Bus(Context({"bus": {"address": tcp_address}}))
    with pytest.raises(errors.ConfigurationError, match="stores messages"):
        plain.subscribe("x", durable="name")
    stored = durable_bus(tcp_address)
    with pytest.raises(errors.ConfigurationError, match=r"bus\.durable needs"):
        stored.publish()


def test_a_server_without_jetstream_is_said_as_such(nats_server: NatsNode) -> None:
    bus = durable_bus(nats_server.url, start_timeout=1.0)
    subscriber = bus.subscribe("x", durable="name")
    with pytest.raises(errors.TransportError, match="-js"):
        subscriber.wait_ready(10.0)
    subscriber.close()


# -- the stream -----------------------------------------------------------------------


def test_the_stream_is_made_with_the_settings_and_an_existing_one_is_used_as_it_is(
    jetstream: NatsNode, caplog: pytest.LogCaptureFixture
) -> None:
    bus = durable_bus(jetstream.url, **{"stream.max_age": 60, "stream.max_bytes": 1 << 20})
    subscriber = bus.subscribe("x", durable="settings")
    assert subscriber.wait_ready(10.0)
    config = stream_state(jetstream)["config"]
    assert config["subjects"] == ["shellbot.c.>"]
    assert config["max_age"] == 60 * 10**9
    assert config["max_bytes"] == 1 << 20
    assert config["num_replicas"] == 1 and config["storage"] == "file"
    subscriber.close()
    # Another program asks for other limits: the stream stays as it is, and it is said.
    other = durable_bus(jetstream.url, **{"stream.max_age": 120}, linger=5.001)
    with caplog.at_level(logging.WARNING, logger="shellbot.bus"):
        again = other.subscribe("x", durable="settings")
        assert again.wait_ready(10.0)
    assert stream_state(jetstream)["config"]["max_age"] == 60 * 10**9
    assert "max_age" in caplog.text and "used as it is" in caplog.text
    again.close(forget=True)


def test_a_stream_that_would_break_a_promise_is_an_error_naming_the_setting(
    jetstream: NatsNode,
) -> None:
    import asyncio

    import nats

    async def make_work_queue() -> None:
        client = await nats.connect(jetstream.url)
        await client.jetstream().add_stream(
            name="SHELLBOT", subjects=["shellbot.c.>"], retention="workqueue"
        )
        await client.close()

    asyncio.run(make_work_queue())
    subscriber = durable_bus(jetstream.url).subscribe("x", durable="refused")
    with pytest.raises(errors.ConfigurationError, match="retention workqueue"):
        subscriber.wait_ready(10.0)
    subscriber.close()
    publisher = durable_bus(jetstream.url, linger=5.002).publish()
    publisher.put("x", 1)  # accepted: the stream is looked at in the background
    assert eventually(lambda: _refuses(publisher), timeout=10.0)


def _refuses(publisher: Any) -> bool:
    try:
        publisher.put("x", 2)
    except errors.ConfigurationError as error:
        return "retention workqueue" in str(error)
    return False


# -- stored publishing ----------------------------------------------------------------


def test_a_publish_retried_after_a_lost_acknowledgement_is_stored_once(
    jetstream: NatsNode,
) -> None:
    relay = LaggingRelay(jetstream.port, delay=0.0)
    relay.start()
    try:
        bus = durable_bus(f"nats://127.0.0.1:{relay.port}")
        publisher = bus.publish()
        publisher.put("retried", 0)
        assert eventually(lambda: publisher.stats["stored"] == 1, timeout=10.0)
        # Now the link holds every byte 1.5 s each way: acknowledgements come after the
        # publisher's 2 s, and every run is published again, with the same message id.
        relay.delay = 1.5
        for number in range(1, 20):
            publisher.put("retried", number)
            time.sleep(0.01)  # a few runs, not one
        assert publisher.stop(timeout=30.0)
        stats = publisher.stats
    finally:
        relay.stop()
    assert stats["stored"] == 20 and stats["not_stored"] == 0 and stats["unconfirmed"] == 0
    assert stats["retried"] > 0  # published again: the server kept one copy of each
    runs = stream_state(jetstream)["state"]["messages"]
    reader = durable_bus(jetstream.url).subscribe("retried", durable="after")
    reader.close()
    # One copy of each run in the stream: read back from the start, each number once.
    assert 1 <= runs <= 20
    assert _read_from_start(jetstream.url, "retried") == list(range(20))


def _read_from_start(url: str, channel: str) -> list[Any]:
    import asyncio

    import nats
    import orjson

    async def read() -> list[Any]:
        client = await nats.connect(url)
        subscription = await client.jetstream().subscribe(
            f"shellbot.c.{channel}", ordered_consumer=True, deliver_policy="all"
        )
        values: list[Any] = []
        try:
            while True:
                message = await subscription.next_msg(timeout=1.0)
                values += [orjson.loads(part) for part in message.data[16:].split(b"\n")]
        except nats.errors.TimeoutError:
            pass
        await client.close()
        return values

    return asyncio.run(read())


def test_stop_waits_for_the_server_and_says_what_was_not_stored(jetstream: NatsNode) -> None:
    bus = durable_bus(jetstream.url, send_timeout=1.0)
    publisher = bus.publish()
    publisher.put("kept", 0)
    assert publisher.stop()
    assert publisher.stats["stored"] == 1
    jetstream.kill()
    late = durable_bus(jetstream.url, send_timeout=1.0, linger=5.003).publish()
    late.put("kept", 1)
    started = time.monotonic()
    assert not late.stop(timeout=3.0)  # nothing could store it: said, within the timeout
    assert time.monotonic() - started < 4.5
    stats = late.stats
    assert stats["stored"] == 0 and stats["unconfirmed"] + stats["not_stored"] == 1


def test_stop_says_false_when_a_message_was_given_up_earlier(jetstream: NatsNode) -> None:
    publisher = durable_bus(jetstream.url, send_timeout=1.0).publish()
    publisher.put("kept", 0)
    assert eventually(lambda: publisher.stats["stored"] == 1, timeout=10.0)
    assert jetstream.process is not None
    os.kill(jetstream.process.pid, signal.SIGSTOP)  # connected, and no answer
    try:
        publisher.put("kept", 1)  # given up after bus.send_timeout
        assert eventually(lambda: publisher.stats["not_stored"] == 1, timeout=10.0)
    finally:
        os.kill(jetstream.process.pid, signal.SIGCONT)
    publisher.put("kept", 2)  # the server answers again: this one is stored
    assert eventually(lambda: publisher.stats["stored"] == 2, timeout=20.0)
    assert not publisher.stop(timeout=5.0)


def test_stats_may_be_read_while_runs_wait_for_the_server(jetstream: NatsNode) -> None:
    publisher = durable_bus(jetstream.url, send_timeout=30.0).publish()
    publisher.put("counted", -1)
    assert eventually(lambda: publisher.stats["stored"] == 1, timeout=10.0)
    assert jetstream.process is not None
    os.kill(jetstream.process.pid, signal.SIGSTOP)  # no acknowledgement: the runs pile up
    try:
        deadline = time.monotonic() + 3.0
        number = 0
        while time.monotonic() < deadline and number < 80_000:  # below the queue's bound
            publisher.put("counted", number)
            number += 1
            if number % 10 == 0:
                assert publisher.stats["unconfirmed"] >= 0  # read while the loop adds runs
    finally:
        os.kill(jetstream.process.pid, signal.SIGCONT)
    assert publisher.stop(timeout=30.0)


# -- faults ---------------------------------------------------------------------------


def test_a_durable_subscriber_killed_and_started_again_loses_nothing(
    jetstream: NatsNode, tmp_path: Path
) -> None:
    count = 3000
    reports = spawn.Queue()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    reader = spawn.Process(
        target=durable_reader, args=(jetstream.url, "killed", ["k"], str(logs[0]), reports)
    )
    reader.start()
    assert wait_report(reports, "ready")[1]
    writer = spawn.Process(
        target=durable_publisher, args=(jetstream.url, "k", count, 1000.0, reports)
    )
    writer.start()
    assert eventually(lambda: len(read_log(logs[0])) >= 500, timeout=30.0)
    os.kill(reader.pid or 0, signal.SIGKILL)
    reader.join(5.0)
    handed_before = read_log(logs[0])
    again = spawn.Process(
        target=durable_reader, args=(jetstream.url, "killed", ["k"], str(logs[1]), reports)
    )
    again.start()
    done = wait_report(reports, "done", timeout=60.0)
    if done[1] is True:  # the publisher's report came first: the reader's follows
        publisher_report, reader_report = done, wait_report(reports, "done", timeout=60.0)
    else:
        reader_report, publisher_report = done, wait_report(reports, "done", timeout=60.0)
    writer.join(10.0)
    again.join(10.0)
    assert publisher_report[1] is True and publisher_report[2]["stored"] == count + 1
    first = [number for _, number in handed_before]
    second = [number for _, number in read_log(logs[1])]
    # Nothing lost: every number was handed, in order within each life.
    assert sorted(set(first) | set(second)) == list(range(count))
    assert first == sorted(first) and second == sorted(second)
    # What came twice is only the tail the killed one was handed and had not acknowledged:
    # the rest of the NATS message in hand (a run of one publisher on one channel).
    twice = sorted(set(first) & set(second))
    assert twice == first[len(first) - len(twice) :]
    assert len(twice) <= 50, twice
    assert reader_report[1]["duplicates"] == 0  # within one life, nothing twice
    print(f"kill -9 of the durable subscriber: {len(first)} handed before, {len(twice)} twice")


def test_a_publisher_killed_mid_stream_loses_only_what_it_had_not_sent(
    jetstream: NatsNode, tmp_path: Path
) -> None:
    reports = spawn.Queue()
    subscriber = durable_bus(jetstream.url).subscribe("p", durable="survivor")
    assert subscriber.wait_ready(10.0)
    put_log = tmp_path / "put.log"
    writer = spawn.Process(
        target=durable_publisher,
        args=(jetstream.url, "p", 100_000, 1000.0, reports, str(put_log)),
    )
    writer.start()
    assert wait_report(reports, "up")[1]
    assert eventually(lambda: len(read_log(put_log)) >= 1000, timeout=30.0)
    os.kill(writer.pid or 0, signal.SIGKILL)
    writer.join(5.0)
    put = [number for _, number in read_log(put_log)]
    got = drain(subscriber, timeout=3.0)
    # What the server stored arrives, in order, without a hole; what was lost is the
    # tail that had not left the killed process.
    assert got == list(range(len(got)))
    lost = len(put) - len(got)
    assert -1 <= lost <= 200, (len(put), len(got))  # a kill may cut the last line
    assert subscriber.stats["missed"] == 0
    subscriber.close(forget=True)
    print(f"kill -9 of a publisher at 1,000 msgs/s: {len(put)} put, {lost} lost")


@pytest.mark.parametrize("scheme", ["tcp", "ipc", "inproc", "memory"])
def test_every_transport_that_stores_nothing_refuses_durable(
    scheme: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from conftest import unique_address

    address = unique_address(scheme, tmp_path_factory)
    with pytest.raises(errors.ConfigurationError, match=f"{scheme}:// delivers at most once"):
        Bus(Context({"bus": {"address": address}})).subscribe("x", durable="name")


def test_a_message_whose_handling_raised_comes_again(jetstream: NatsNode) -> None:
    bus = durable_bus(jetstream.url)
    with bus.subscribe("jobs", durable="worker") as subscriber:
        assert subscriber.wait_ready(10.0)
    publisher = bus.publish()
    publisher.put("jobs", "first")
    assert publisher.stop()
    with pytest.raises(RuntimeError), bus.subscribe("jobs", durable="worker") as subscriber:
        assert subscriber.get(block=True, timeout=5.0) == "first"
        raise RuntimeError("the program failed on it")
    # The program never asked for the next one: "first" was not done with, and comes again.
    with bus.subscribe("jobs", durable="worker") as subscriber:
        assert [message.message for message in _iterate(subscriber, 1)] == ["first"]
    with bus.subscribe("jobs", durable="worker") as subscriber:  # done with by the loop
        assert subscriber.get(block=True, timeout=1.0) is None
        subscriber.close(forget=True)


def _iterate(subscriber: Any, count: int) -> list[Any]:
    """The first ``count`` messages of a ``for`` loop over ``subscriber``; then asks for
    one more, as a loop does, so the last one is done with."""
    got = []
    for message in subscriber:
        got.append(message)
        if len(got) == count:
            break
    assert subscriber.get(block=True, timeout=0.5) is None
    return got


def test_the_readme_durable_example_runs(jetstream: NatsNode) -> None:
    import re

    readme = Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    example = next(block for block in blocks if "durable='counter'" in block)
    example = example.replace("nats://127.0.0.1:4222", jetstream.url)
    namespace: dict[str, Any] = {}
    exec(example, namespace)
    assert namespace["ballot"] == {"voter": "alice", "choice": "pizza"}
    assert namespace["publisher"].stats["stored"] == 1
    assert stream_state(jetstream).get("consumer_detail", []) == []


def test_a_subscriber_closed_in_the_middle_of_a_run_hands_its_successor_only_the_rest(
    jetstream: NatsNode,
) -> None:
    bus = durable_bus(jetstream.url)
    first = bus.subscribe("runs", durable="halfway")
    assert first.wait_ready(10.0)
    publisher = bus.publish()
    for number in range(500):  # in a tight loop: joined into runs, several per NATS message
        publisher.put("runs", number)
    assert publisher.stop()
    assert stream_state(jetstream)["state"]["messages"] < 500  # so runs were joined
    assert [first.get(block=True, timeout=5.0) for _ in range(250)] == list(range(250))
    first.close()  # 250 is most likely inside a run: the consumer keeps how far it got
    second = bus.subscribe("runs", durable="halfway")
    assert drain(second) == list(range(250, 500))
    second.close(forget=True)


def test_what_the_server_delivers_again_within_one_life_is_handed_once(
    jetstream: NatsNode,
) -> None:
    bus = durable_bus(jetstream.url)
    subscriber = bus.subscribe("again", durable="once")
    assert subscriber.wait_ready(10.0)
    publisher = bus.publish()
    for number in range(50):
        publisher.put("again", number)
        time.sleep(0.002)  # runs of a few messages: many frames
    assert publisher.stop()
    got = [subscriber.get(block=True, timeout=5.0) for _ in range(10)]
    # The server goes and comes back: the consumer is made again at the first frame not
    # acknowledged, and what the subscriber had taken already comes a second time.
    connections = subscriber._receiver.generation
    jetstream.kill()
    jetstream.start()
    assert eventually(lambda: subscriber._receiver.generation > connections, timeout=10.0)
    # Its probe subscribes after the consumer was made again: ready means remade.
    assert subscriber.wait_ready(10.0)
    got += drain(subscriber, timeout=5.0)
    assert got == list(range(50))
    assert subscriber.stats["duplicates"] > 0
    subscriber.close(forget=True)
