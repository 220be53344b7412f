"""Life cycle: close, `with`, live subscribe/unsubscribe, a bounded stop, no leaks."""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil
import pytest
from conftest import Subscribers

from shellbot._publishing.keeper import SWITCH_INTERVAL
from shellbot.bus import Bus, Publisher, Subscriber
from shellbot.errors import ClosedError


def test_close_is_final_and_idempotent(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "closing")
    publisher.put("closing", 1)
    assert subscriber.get(block=True, timeout=5.0) == 1
    subscriber.close()
    subscriber.close()
    assert subscriber.closed
    for call in (
        lambda: subscriber.get(),
        lambda: subscriber.get(block=True, timeout=0.1),
        lambda: subscriber.receive(),
        lambda: subscriber.subscribe("other"),
        lambda: subscriber.unsubscribe("closing"),
        lambda: subscriber.wait_ready(0.1),
    ):
        with pytest.raises(ClosedError, match=r"bus\.subscribe"):
            call()


def test_with_closes_the_subscriber(bus: Bus, publisher: Publisher) -> None:
    with bus.subscribe("scoped") as subscriber:
        assert isinstance(subscriber, Subscriber)
        assert subscriber.wait_ready(timeout=5.0)
        publisher.put("scoped", "in")
        assert subscriber.get(block=True, timeout=5.0) == "in"
    assert subscriber.closed
    with pytest.raises(RuntimeError), bus.subscribe("scoped") as other:
        raise RuntimeError("boom")
    assert other.closed


def test_subscribe_on_a_live_subscriber(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "first")
    subscriber.subscribe(["second", "third"])
    assert subscriber.wait_ready(timeout=5.0)
    publisher.put("third", 3)
    publisher.put("second", 2)
    publisher.put("first", 1)
    received = [subscriber.receive(block=True, timeout=5.0) for _ in range(3)]
    assert [(m.channel, m.message) for m in received if m] == [
        ("third", 3),
        ("second", 2),
        ("first", 1),
    ]


def test_unsubscribe_on_a_live_subscriber(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["keep", "drop"])
    publisher.put("drop", "before")
    assert subscriber.get(block=True, timeout=5.0) == "before"
    subscriber.unsubscribe("drop")
    publisher.put("drop", "after")
    publisher.put("keep", "marker")  # arrives after "after" would have
    assert subscriber.get(block=True, timeout=5.0) == "marker"
    assert subscriber.get() is None
    with pytest.raises(ValueError, match="no channel 'drop'"):
        subscriber.unsubscribe("drop")


def test_a_channel_subscribed_twice_stays_until_unsubscribed_twice(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["twice", "marker"])
    subscriber.subscribe("twice")
    assert subscriber.wait_ready(timeout=5.0)
    subscriber.unsubscribe("twice")
    publisher.put("twice", "still here")
    assert subscriber.get(block=True, timeout=5.0) == "still here"
    subscriber.unsubscribe("twice")
    publisher.put("twice", "gone")
    publisher.put("marker", "end")
    assert subscriber.get(block=True, timeout=5.0) == "end"


def test_unsubscribing_everything_then_resubscribing(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "")
    subscriber.unsubscribe("")
    subscriber.subscribe("back")
    assert subscriber.wait_ready(timeout=5.0)
    publisher.put("elsewhere", 0)
    publisher.put("back", 1)
    message = subscriber.receive(block=True, timeout=5.0)
    assert message is not None and (message.channel, message.message) == ("back", 1)


def test_stop_forwards_what_was_put_then_stops(bus: Bus, subscribers: Subscribers) -> None:
    publisher = bus.publish()
    publisher.start()
    subscriber = subscribers(bus, "drain")
    count = 5_000
    for index in range(count):
        publisher.put("drain", index)
    started = time.monotonic()
    assert publisher.stop(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert not publisher.is_alive()
    received = [subscriber.get(block=True, timeout=5.0) for _ in range(count)]
    assert received == list(range(count))
    assert subscriber.stats["missed"] == 0
    assert publisher.stop(timeout=5.0)  # stopping again is harmless


def test_stop_is_bounded_when_the_publisher_is_a_client(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    client = bus.publish()
    client.start()
    assert not client.holds_hub
    subscriber = subscribers(bus, "client")
    client.put("client", "last words")
    started = time.monotonic()
    assert client.stop(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert subscriber.get(block=True, timeout=5.0) == "last words"
    assert publisher.is_alive()  # the one holding the hub is not affected


def test_stop_before_start_is_a_no_op(bus: Bus) -> None:
    assert bus.publish().stop(timeout=5.0)


def _settle(measure: Any, baseline: int, timeout: float = 10.0) -> int:
    """ZeroMQ frees a closed socket's descriptors in its own thread, just after close()."""
    deadline = time.monotonic() + timeout
    value = measure()
    while value > baseline and time.monotonic() < deadline:
        time.sleep(0.01)
        value = measure()
    return value


def test_a_thousand_subscribers_leave_no_descriptor_or_thread(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    process = psutil.Process()
    # The first subscriber sets up what lives as long as the process (ZeroMQ's threads,
    # this process's outbox); a publisher running in a thread of this process opens its
    # connection to the context's manager at its first look at the switch. Count from there.
    with subscribers(bus, "warm-up"):
        pass
    time.sleep(3 * SWITCH_INTERVAL)
    fds = _settle(process.num_fds, 0, timeout=0)
    threads = threading.active_count()
    os_threads = process.num_threads()
    for index in range(1_000):
        subscriber = bus.subscribe(["votes", f"direct-{index}"])
        if index % 100 == 0:
            assert subscriber.wait_ready(timeout=5.0)
            publisher.put(f"direct-{index}", index)
            assert subscriber.get(block=True, timeout=5.0) == index
        subscriber.close()
    with bus.subscribe("votes"):
        pass
    assert _settle(process.num_fds, fds) <= fds
    assert _settle(process.num_threads, os_threads) <= os_threads
    assert threading.active_count() <= threads


class Exclusive:
    """Wraps a real receiver and records any two threads inside it at the same time."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.lock = threading.Lock()
        self.inside = 0
        self.overlaps = 0
        self.threads: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.receiver, name)
        if not callable(attribute) or name == "interrupt":  # interrupt() is for any thread
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.inside += 1
                self.overlaps += self.inside > 1
                self.threads.add(threading.get_ident())
            try:
                return attribute(*args, **kwargs)
            finally:
                with self.lock:
                    self.inside -= 1

        return call


def receiver_closed(receiver: Any) -> bool:
    return bool(receiver.closed)


@pytest.mark.parametrize("delay", [0.0, 0.0005, 0.003, 0.02])
def test_close_from_another_thread_leaves_the_socket_to_the_receiving_one(
    bus: Bus, publisher: Publisher, delay: float, subscribers: Subscribers
) -> None:
    for round_ in range(5):
        # A channel per round: a round closes its subscriber while its messages may still
        # be on their way, and those that the hub forwards after the next round's
        # subscriber subscribed reach that one, as pub/sub has it, ahead of its own.
        channel = f"busy-{round_}"
        subscriber = subscribers(bus, channel)
        spy = Exclusive(subscriber._receiver)
        subscriber._receiver = spy  # type: ignore[assignment]
        iterating_started = threading.Event()
        seen: list[Any] = []

        def iterate(
            subscriber: Subscriber = subscriber,
            seen: list[Any] = seen,
            iterating_started: threading.Event = iterating_started,
        ) -> None:
            iterating_started.set()
            for message in subscriber:
                seen.append(message.message)

        thread = threading.Thread(target=iterate, daemon=True)
        thread.start()
        assert iterating_started.wait(5.0)
        for index in range(50):
            publisher.put(channel, index)
        if delay:
            time.sleep(delay)
        subscriber.close()
        thread.join(5.0)
        assert not thread.is_alive(), "iteration did not end after close()"
        assert spy.overlaps == 0
        assert receiver_closed(spy.receiver)
        assert seen == list(range(len(seen)))
