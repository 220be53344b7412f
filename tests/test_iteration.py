"""Iteration: `for message in subscriber` blocks between messages and ends cleanly."""

from __future__ import annotations

import threading
import time

from conftest import Subscribers

from shellbot import Context
from shellbot.bus import Bus, Message, Publisher, Subscriber


class Iterating:
    """A thread that iterates over a subscriber; the test waits on what it saw."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.received: list[Message] = []
        self.arrived = threading.Condition()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        for message in self.subscriber:
            with self.arrived:
                self.received.append(message)
                self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[object]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return [message.message for message in self.received]


def test_iteration_yields_envelopes_in_order(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["a", "b"])
    for index in range(10):
        publisher.put("a" if index % 2 else "b", index)
    received = []
    for message in subscriber:
        assert isinstance(message, Message)
        received.append((message.channel, message.message))
        if len(received) == 10:
            break
    assert received == [("a" if index % 2 else "b", index) for index in range(10)]
    subscriber.close()


def test_iteration_blocks_between_messages(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "slow")
    iterating = Iterating(subscriber)
    publisher.put("slow", 1)
    assert iterating.wait_for(1) == [1]
    assert iterating.thread.is_alive()  # waiting for the next one, not ended
    publisher.put("slow", 2)
    assert iterating.wait_for(2) == [1, 2]
    subscriber.close()
    iterating.thread.join(5.0)
    assert not iterating.thread.is_alive()


def test_closing_in_the_loop_ends_it(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "stop-here")
    for index in range(5):
        publisher.put("stop-here", index)
    seen = []
    for message in subscriber:
        seen.append(message.message)
        if message.message == 2:
            subscriber.close()
    assert seen == [0, 1, 2]
    assert subscriber.closed
    assert list(subscriber) == []  # a closed subscriber iterates over nothing


def test_closing_from_another_thread_ends_it(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "idle")
    iterating = Iterating(subscriber)
    publisher.put("idle", "one")
    assert iterating.wait_for(1) == ["one"]
    started = time.monotonic()
    subscriber.close()
    iterating.thread.join(5.0)
    assert not iterating.thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert iterating.wait_for(1) == ["one"]


def test_switch_off_ends_it(
    bus: Bus, context: Context, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "switch")
    iterating = Iterating(subscriber)
    publisher.put("switch", "before")
    assert iterating.wait_for(1) == ["before"]
    started = time.monotonic()
    context.set("general.switch", "off")
    iterating.thread.join(5.0)
    assert not iterating.thread.is_alive()
    assert time.monotonic() - started < 1.0
    # The switch ends iteration; it does not close the subscriber.
    assert not subscriber.closed
    assert subscriber.get() is None
    subscriber.close()


def test_iteration_does_not_start_when_switched_off(bus: Bus, context: Context) -> None:
    context.set("general.switch", "off")
    with bus.subscribe("any") as subscriber:
        started = time.monotonic()
        assert list(subscriber) == []
        assert time.monotonic() - started < 1.0


def test_switch_off_ends_it_while_messages_keep_coming(
    bus: Bus, context: Context, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "busy")
    flowing = threading.Event()
    stop_feeding = threading.Event()

    def feed() -> None:
        while not stop_feeding.is_set():
            publisher.put("busy", "more")
            flowing.set()
            stop_feeding.wait(0.001)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert flowing.wait(5.0)
        ended_at = None
        switched_at = None
        for count, _message in enumerate(subscriber):
            if count == 100:
                switched_at = time.monotonic()
                context.set("general.switch", "off")
            if switched_at is not None and time.monotonic() - switched_at > 5.0:
                break  # bounded: the assertion below then fails
        ended_at = time.monotonic()
        assert switched_at is not None
        assert ended_at - switched_at < 1.0
    finally:
        stop_feeding.set()
        feeder.join(5.0)
        subscriber.close()
