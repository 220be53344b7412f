"""The process holding the hub stops cleanly while others publish: the next holder takes
the hub over and nothing the others put is lost (see ``_zmq_handover``)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest

from shellbot import Context
from shellbot.bus import Bus, Publisher

pytestmark = [pytest.mark.embedded_hub, pytest.mark.slow]

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
        _receive(subscriber, received, _wait_for(lambda: len(received) >= total, 60.0))
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
    # A new hub forwards what no one asked for yet (a subscriber that had not re-subscribed)
    # to no one: it counts that, and it would show here.
    unrouted = sum(holder.stats["unrouted"] for holder in holders)
    by_publisher: dict[int, list[int]] = {}
    for index, number in received:
        by_publisher.setdefault(index, []).append(number)
    lost = total - len(received)
    assert lost == 0, f"{lost} of {total} lost ({unrouted} unrouted), {subscriber.stats}"
    for index, numbers in by_publisher.items():
        assert numbers == list(range(COUNT)), f"publisher {index}: out of order or twice"
    assert subscriber.stats["missed"] == 0
    assert unrouted == 0
