"""The process holding the hub stops cleanly while others publish: the next holder takes
the hub over and nothing the others put is lost (see ``_transports/zmq/handover.py``)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
from conftest import unique_address

from shellbot import Context
from shellbot._settings import BusSettings
from shellbot._transports import transport_for
from shellbot.bus import Bus, Publisher

pytestmark = pytest.mark.embedded_hub

HANDOVERS = 4  # holders that stop, one after the other; one more holds the hub at the end
PUBLISHERS = 50
COUNT = 1000  # messages each publishing process puts
BURST = 5  # messages put at once, every PERIOD seconds: 1,000 messages take 6 s
PERIOD = 0.03
HOLDING = 0.6  # seconds each holder forwards before it is stopped


def _publish(publisher: Publisher, index: int, go: Any, start_at: Any, received: Any) -> None:
    """In a forked process: puts COUNT messages [index, number] on 'load', in bursts, then
    lives on until they were received. A process that ends while no hub is bound loses
    what its socket still holds, bus.linger notwithstanding: a matter of its exit, not of
    the hand-over."""
    go.wait(30.0)
    for burst in range(COUNT // BURST):
        time.sleep(max(0.0, start_at.value + burst * PERIOD - time.time()))
        for number in range(burst * BURST, (burst + 1) * BURST):
            publisher.put("load", [index, number])
    received.wait(90.0)


def _receive(subscriber: Any, received: list[Any], until: Any) -> None:
    """Takes what arrives into ``received`` until ``until()`` is true."""
    while not until():
        message = subscriber.get(block=True, timeout=0.05)
        if message is not None:
            received.append(message)


def _wait_for(condition: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    return lambda: condition() or time.monotonic() > deadline


def _stream(publisher: Publisher, count: int, go: Any, received: Any) -> None:
    """In a forked process: puts 0 to count - 1 on 'load' without pause, then lives on
    until they were received (see _publish)."""
    go.wait(30.0)
    for number in range(count):
        publisher.put("load", number)
        if number % 100 == 99:
            time.sleep(0.001)  # a steady stream: the hub is never quiet for long
    received.wait(30.0)


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_a_hub_closed_while_another_process_sends_leaves_the_rest_to_the_next_in_order(
    scheme: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fork = multiprocessing.get_context("fork")
    context = Context({"bus": {"address": unique_address(scheme, tmp_path_factory)}})
    transport = transport_for(BusSettings.from_context(context))
    bus = Bus(context)
    count, go, all_received = 20_000, fork.Event(), fork.Event()
    # Forked before the hub binds: a child holding a copy of its listener would keep the
    # port, and of a connection, keep that up after its owner ended it.
    sender = fork.Process(target=_stream, args=(bus.publish(), count, go, all_received))
    sender.start()
    hub = transport.open_hub()
    assert hub is not None
    subscriber = bus.subscribe("load")
    successor = None
    try:
        assert subscriber.wait_ready(5.0)
        go.set()
        assert subscriber.get(block=True, timeout=10.0) == 0
        hub.close(2.0)  # while the stream goes on
        deadline = time.monotonic() + 5.0
        while successor is None and time.monotonic() < deadline:
            successor = transport.open_hub()  # the port is free once the old sockets closed
        assert successor is not None
        received = [0]

        def unrouted() -> int:
            return successor.stats()["unrouted"] if successor is not None else 0

        while len(received) + unrouted() < count:
            message = subscriber.get(block=True, timeout=10.0)
            if message is None:
                break
            received.append(message)
        stats = f"{subscriber.stats}, old hub {hub.stats()}, new hub {successor.stats()}"
        # The old hub loses nothing. The only loss allowed is the new hub's, counted: what
        # it forwarded before the subscriber, slow to reconnect, had asked again.
        assert len(received) + unrouted() == count, stats
        assert received == sorted(set(received)), stats  # in order, nothing twice
        assert subscriber.stats["missed"] <= unrouted(), stats
    finally:
        go.set()
        all_received.set()
        sender.join(10.0)
        subscriber.close()
        for each in (hub, successor):
            if each is not None:
                each.close(0.0)


@pytest.mark.slow
def test_4_holders_stop_cleanly_while_50_processes_publish_and_nothing_is_lost(
    tcp_address: str,
) -> None:
    fork = multiprocessing.get_context("fork")
    bus = Bus(Context({"bus": {"address": tcp_address}}))
    handle = bus.publish()  # never started: its put() works in every process
    go, start_at, all_received = fork.Event(), fork.Value("d", 0.0), fork.Event()
    publishers = [
        fork.Process(target=_publish, args=(handle, index, go, start_at, all_received))
        for index in range(PUBLISHERS)
    ]
    # Forked before this process opens a socket: a child holding a copy of one would keep
    # that connection up after its owner ended it, until heartbeats time it out.
    for process in publishers:
        process.start()
    holders = [bus.publish() for _ in range(HANDOVERS + 1)]
    for holder in holders:
        holder.start()
    assert holders[0].holds_hub
    subscriber = bus.subscribe("load")
    received: list[Any] = []
    total = PUBLISHERS * COUNT
    try:
        assert subscriber.wait_ready(10.0)
        start_at.value = time.time() + 0.3
        go.set()
        waiting = list(holders)  # started and not stopped yet: one holds the hub
        for _ in range(HANDOVERS):
            _receive(subscriber, received, _wait_for(lambda: False, HOLDING))
            holding = [holder for holder in waiting if holder.holds_hub]
            assert len(holding) == 1, "one process holds the hub at a time"
            stopping = threading.Thread(target=holding[0].stop, kwargs={"timeout": 10.0})
            stopping.start()
            _receive(subscriber, received, lambda: not stopping.is_alive())  # noqa: B023
            stopping.join()
            assert not holding[0].is_alive()
            waiting = [holder for holder in waiting if holder is not holding[0]]
            taken = _wait_for(lambda: any(h.holds_hub for h in waiting), 10.0)  # noqa: B023
            _receive(subscriber, received, taken)
            assert any(holder.holds_hub for holder in waiting), "no one took the hub over"

        def counted() -> int:
            return len(received) + sum(holder.stats["unrouted"] for holder in holders)

        arrived = _wait_for(lambda: counted() >= total, 60.0)
        _receive(subscriber, received, arrived)
        _receive(subscriber, received, _wait_for(lambda: False, 0.2))  # nothing more comes
        all_received.set()
        for process in publishers:
            process.join(10.0)
        assert [process.exitcode for process in publishers] == [0] * PUBLISHERS
    finally:
        all_received.set()
        subscriber.close()
        for holder in holders:
            holder.stop(timeout=10.0)
        for process in publishers:
            if process.is_alive():
                process.kill()
                process.join(5.0)
    # The stopping hubs lose nothing. The only loss allowed is a new hub's, counted: what it
    # forwarded before the subscriber, slow to reconnect, had asked again (design record).
    unrouted = sum(holder.stats["unrouted"] for holder in holders)
    by_publisher: dict[int, list[int]] = {}
    for index, number in received:
        by_publisher.setdefault(index, []).append(number)
    lost = total - len(received)
    assert lost == unrouted, f"{lost} of {total} lost ({unrouted} unrouted), {subscriber.stats}"
    for index, numbers in by_publisher.items():
        assert numbers == sorted(set(numbers)), f"publisher {index}: out of order or twice"
    assert subscriber.stats["missed"] <= unrouted
