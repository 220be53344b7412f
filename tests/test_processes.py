"""Both patterns of the spec across independent processes: forked, spawned, other programs."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import _workers
import psutil
import pytest
from conftest import running_publisher

from shellbot import Context
from shellbot.bus import Bus, Publisher

DIRECTS = [f"direct-{index}" for index in range(4)]


@pytest.fixture
def network_bus(network_address: str) -> Bus:
    return Bus(Context({"bus": {"address": network_address}}))


@pytest.fixture
def group_publisher(network_bus: Bus) -> Iterator[Publisher]:
    yield from running_publisher(network_bus)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_fan_out_each_direct_channel_gets_exactly_its_messages(
    network_address: str, group_publisher: Publisher, method: str
) -> None:
    processes = multiprocessing.get_context(method)
    ready, results = processes.Queue(), processes.Queue()
    listeners = [
        processes.Process(
            target=_workers.direct_listener, args=(network_address, channel, ready, results)
        )
        for channel in DIRECTS
    ]
    for listener in listeners:
        listener.start()
    try:
        assert sorted(ready.get(timeout=30.0) for _ in DIRECTS) == [(c, True) for c in DIRECTS]
        group_publisher.put(DIRECTS, {"question": "lunch?"})  # the first pattern
        for channel in DIRECTS:
            group_publisher.put(channel, {"to": channel})
        group_publisher.put("direct-10", {"to": "direct-10"})  # a prefix of none, exact
        group_publisher.put("direct", {"to": "nobody"})
        group_publisher.put(DIRECTS, "end")
        reports = {
            channel: (received, stats)
            for channel, received, stats in (results.get(timeout=30.0) for _ in DIRECTS)
        }
    finally:
        for listener in listeners:
            listener.join(timeout=10.0)
            if listener.is_alive():
                listener.terminate()
    for channel in DIRECTS:
        received, stats = reports[channel]
        assert received == [{"question": "lunch?"}, {"to": channel}]
        assert stats["dropped"] == stats["missed"] == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_fan_in_many_publishers_on_one_address(
    network_address: str, network_bus: Bus, group_publisher: Publisher, method: str
) -> None:
    group = network_bus.subscribe(DIRECTS)
    assert group.wait_ready(timeout=5.0)
    count = 500
    processes = multiprocessing.get_context(method)
    reporters = [
        processes.Process(target=_workers.direct_reporter, args=(network_address, channel, count))
        for channel in DIRECTS
    ]
    for reporter in reporters:
        reporter.start()
    received = [group.receive(block=True, timeout=20.0) for _ in range(count * len(DIRECTS))]
    for reporter in reporters:
        reporter.join(timeout=20.0)
        assert reporter.exitcode == 0
    assert None not in received
    for channel in DIRECTS:
        mine = [m.message for m in received if m is not None and m.channel == channel]
        assert mine == [{"from": channel, "counter": index} for index in range(count)]
    assert group.get() is None
    assert group.stats == {"received": count * len(DIRECTS), "dropped": 0, "missed": 0}


def test_fan_in_from_separate_programs_sharing_nothing(
    network_address: str, network_bus: Bus
) -> None:
    """Other programs, each with its own Context, Bus and Publisher; the first one up holds
    the hub and the others use it, with no server set up beforehand."""
    group = network_bus.subscribe(DIRECTS)
    group_publisher = network_bus.publish()
    group_publisher.start()  # the group broadcasts too, as in the voting system
    assert group.wait_ready(timeout=5.0)
    script = textwrap.dedent(
        """
        import sys
        from shellbot import Context
        from shellbot.bus import Bus

        address, channel = sys.argv[1], sys.argv[2]
        bus = Bus(Context({'bus': {'address': address}}))
        bus.check()
        publisher = bus.publish()
        publisher.start()
        for counter in range(200):
            publisher.put(channel, {'from': channel, 'counter': counter})
        """
    )
    try:
        programs = [
            subprocess.Popen([sys.executable, "-c", script, network_address, channel])
            for channel in DIRECTS
        ]
        received = [group.receive(block=True, timeout=20.0) for _ in range(200 * len(DIRECTS))]
        for program in programs:
            assert program.wait(timeout=30.0) == 0
    finally:
        group_publisher.stop()
    assert None not in received
    for channel in DIRECTS:
        mine = [m.message["counter"] for m in received if m is not None and m.channel == channel]
        assert mine == list(range(200))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_original_publisher_tool_sends_everything_and_ends(
    network_address: str, network_bus: Bus, method: str
) -> None:
    """Its publisher holds the hub (on tcp://), in a process of the tool's own: the pill
    put before start() reaches that process after the messages, and join() returns."""
    subscriber = network_bus.subscribe("tool")
    if network_address.startswith("nats://"):
        # The server is up: prove the subscription live there before the tool puts, or a
        # tool that starts fast (forked) publishes all before it and nothing arrives.
        # On tcp:// the hub is the tool's own: the subscriber connects as it binds.
        assert subscriber.wait_ready(timeout=10.0)
    tool = multiprocessing.get_context(method).Process(
        target=_workers.publisher_tool, args=(network_address, "tool", 32)
    )
    tool.start()
    try:
        # One deadline for all: what never arrives fails here, not at the test's timeout.
        deadline = time.monotonic() + 20.0
        received = []
        while len(received) < 32 and (left := deadline - time.monotonic()) > 0:
            if (message := subscriber.get(block=True, timeout=left)) is not None:
                received.append(message)
        tool.join(timeout=20.0)
        assert tool.exitcode == 0
    finally:
        if tool.is_alive():  # stuck: its publisher and its context's manager go with it
            for child in psutil.Process(tool.pid).children(recursive=True):
                child.kill()
            tool.terminate()
    assert received == list(range(32))


def test_a_publisher_object_can_be_used_in_a_spawned_process(
    network_bus: Bus, group_publisher: Publisher
) -> None:
    subscriber = network_bus.subscribe("shared")
    assert subscriber.wait_ready(timeout=5.0)
    child = multiprocessing.get_context("spawn").Process(
        target=_workers.put_with, args=(group_publisher, "shared", 50)
    )
    child.start()
    child.join(timeout=30.0)
    assert child.exitcode == 0
    assert [subscriber.get(block=True, timeout=10.0) for _ in range(50)] == list(range(50))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_context_changes_after_start_are_seen_by_other_processes(method: str) -> None:
    context = Context({"shared": {"value": 1}})
    processes = multiprocessing.get_context(method)
    go, results = processes.Event(), processes.Queue()
    child = processes.Process(target=_workers.read_setting, args=(context, go, results))
    child.start()
    assert results.get(timeout=30.0) == ("started", None)
    context.set("shared.value", 42)
    go.set()
    assert results.get(timeout=10.0) == ("value", 42)
    child.join(timeout=10.0)
