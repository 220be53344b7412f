"""The envelope: receive() keeps what get() loses (channel, sender, sequence)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import Subscribers

import shellbot.bus
from shellbot.bus import Bus, Message, Publisher


def test_message_is_importable_from_the_bus_module() -> None:
    assert shellbot.bus.Message is Message
    assert "Message" in shellbot.bus.__all__


def test_receive_gives_the_channel_and_the_message(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["direct-1", "direct-2"])
    publisher.put("direct-2", {"vote": "yes"})
    publisher.put("direct-1", [1, 2])
    first = subscriber.receive(block=True, timeout=5.0)
    second = subscriber.receive(block=True, timeout=5.0)
    assert isinstance(first, Message) and isinstance(second, Message)
    assert (first.channel, first.message) == ("direct-2", {"vote": "yes"})
    assert (second.channel, second.message) == ("direct-1", [1, 2])


def test_sender_and_sequence_number_each_channel(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "")
    for index in range(3):
        publisher.put("a", index)
    publisher.put("b", "x")
    publisher.put(["a", "b"], "both")
    received = [subscriber.receive(block=True, timeout=5.0) for _ in range(6)]
    assert all(message is not None for message in received)
    assert [(m.channel, m.sequence) for m in received if m is not None] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("a", 4),
        ("b", 2),
    ]
    # One process, one sender id, whichever publisher object put the message.
    senders = {m.sender for m in received if m is not None}
    assert len(senders) == 1
    (sender,) = senders
    assert isinstance(sender, int) and 0 <= sender < 2**64
    bus.publish().put("a", "from another publisher object")
    last = subscriber.receive(block=True, timeout=5.0)
    assert last is not None and (last.sender, last.sequence) == (sender, 5)
    assert subscriber.stats == {"received": 7, "dropped": 0, "missed": 0}


def test_message_is_immutable(bus: Bus, publisher: Publisher, subscribers: Subscribers) -> None:
    subscriber = subscribers(bus, "frozen")
    publisher.put("frozen", {"n": 1})
    message = subscriber.receive(block=True, timeout=5.0)
    assert message is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.channel = "other"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        message.extra = 1  # type: ignore[attr-defined]
    assert message == Message("frozen", {"n": 1}, message.sender, message.sequence)
    assert "frozen" in repr(message)


def test_receive_returns_none_when_nothing_came(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "quiet")
    assert subscriber.receive() is None
    assert subscriber.receive(block=False) is None
    assert subscriber.receive(block=True, timeout=0.05) is None


def test_get_and_receive_share_one_stream(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "mixed")
    for index in range(4):
        publisher.put("mixed", index)
    assert subscriber.get(block=True, timeout=5.0) == 0
    message = subscriber.receive(block=True, timeout=5.0)
    assert message is not None and (message.message, message.sequence) == (1, 2)
    assert subscriber.get(block=True, timeout=5.0) == 2
    message = subscriber.receive(block=True, timeout=5.0)
    assert message is not None and message.message == 3


def test_a_pattern_subscriber_sees_the_real_channel(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "votes.*", pattern=True)
    publisher.put("votes.alice", "yes")
    message = subscriber.receive(block=True, timeout=5.0)
    assert message is not None and message.channel == "votes.alice"
