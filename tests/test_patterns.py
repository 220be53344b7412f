"""Wildcards, opt-in: NATS-style patterns with pattern=True; plain names stay exact."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import Subscribers

from shellbot.bus import Bus, Publisher, Subscriber

CHANNELS = [
    "votes",
    "votes.alice",
    "votes.bob",
    "votes.alice.final",
    "votesx.alice",
    "votes.*",
    "votes.>",
    "polls.alice",
]


def drain(subscriber: Subscriber) -> list[str]:
    """The channels of everything received, up to the 'end' marker sent on 'zz.end'."""
    channels = []
    while True:
        message = subscriber.receive(block=True, timeout=5.0)
        assert message is not None, f"no end marker; got {channels}"
        if message.channel == "zz.end":
            return channels
        channels.append(message.channel)


def publish_all(publisher: Publisher, channels: list[str]) -> None:
    for channel in channels:
        publisher.put(channel, {"on": channel})
    publisher.put("zz.end", "end")


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["votes.*"], ["votes.alice", "votes.bob", "votes.*", "votes.>"]),
        (
            ["votes.>"],
            ["votes.alice", "votes.bob", "votes.alice.final", "votes.*", "votes.>"],
        ),
        (["*.alice"], ["votes.alice", "votesx.alice", "polls.alice"]),
        (["votes.*.final"], ["votes.alice.final"]),
        (["*"], ["votes"]),
        ([">"], CHANNELS),
        (["votes", "votes.alice"], ["votes", "votes.alice"]),  # no wildcard: exact names
    ],
)
def test_patterns_match_what_they_say(
    bus: Bus,
    publisher: Publisher,
    patterns: list[str],
    expected: list[str],
    subscribers: Subscribers,
) -> None:
    subscriber = subscribers(bus, [*patterns, "zz.end"], pattern=True)
    publish_all(publisher, CHANNELS)
    assert drain(subscriber) == expected


def test_without_pattern_wildcards_are_plain_characters(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    star = subscribers(bus, ["votes.*", "zz.end"])
    rest = subscribers(bus, ["votes.>", "zz.end"])
    publish_all(publisher, CHANNELS)
    assert drain(star) == ["votes.*"]
    assert drain(rest) == ["votes.>"]


def test_a_wildcard_in_a_published_channel_is_no_wildcard(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    exact_alice = subscribers(bus, ["votes.alice", "zz.end"])
    exact_star = subscribers(bus, ["votes.*", "zz.end"])
    pattern_star = subscribers(bus, ["votes.*", "zz.end"], pattern=True)
    pattern_other = subscribers(bus, ["polls.*", "zz.end"], pattern=True)
    publish_all(publisher, ["votes.*"])
    assert drain(exact_alice) == []  # '*' published by name does not reach votes.alice
    assert drain(exact_star) == ["votes.*"]
    assert drain(pattern_star) == ["votes.*"]  # '*' is a token that votes.* matches
    assert drain(pattern_other) == []


def test_everything_stays_everything(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    everything = subscribers(bus, "", pattern=True)
    publish_all(publisher, CHANNELS)
    assert drain(everything) == CHANNELS


def test_patterns_and_names_together_deliver_once(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["votes.alice", "zz.end"])
    subscriber.subscribe(["votes.*", "votes.>"], pattern=True)
    assert subscriber.wait_ready(timeout=5.0)
    publish_all(publisher, ["votes.alice", "votes.alice.final", "polls.alice"])
    assert drain(subscriber) == ["votes.alice", "votes.alice.final"]


def test_a_pattern_that_comes_and_goes_leaves_names_delivered_once(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["votes.alice", "zz.end"])
    publish_all(publisher, ["votes.alice", "votes.bob"])
    assert drain(subscriber) == ["votes.alice"]
    subscriber.subscribe("votes.*", pattern=True)
    assert subscriber.wait_ready(timeout=5.0)
    publish_all(publisher, ["votes.alice", "votes.bob"])
    assert drain(subscriber) == ["votes.alice", "votes.bob"]
    subscriber.unsubscribe("votes.alice")  # the pattern alone delivers it now
    publish_all(publisher, ["votes.alice", "votes.bob"])
    assert drain(subscriber) == ["votes.alice", "votes.bob"]
    subscriber.subscribe("votes.alice")
    subscriber.unsubscribe("votes.*", pattern=True)
    assert subscriber.wait_ready(timeout=5.0)
    publish_all(publisher, ["votes.alice", "votes.bob"])
    assert drain(subscriber) == ["votes.alice"]


@pytest.mark.timeout(60)
def test_a_subscriber_of_many_channels_takes_each_new_one_at_once(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    """Without a pattern, a message is delivered by its channel's subscription alone: a
    subscriber of 5,000 channels looks at none of the others for a channel new to it
    (on nats:// it used to scan them all, about 15 s for one message on each here)."""
    channels = [f"many.{index}" for index in range(5000)]
    subscriber = subscribers(bus, [*channels, "zz.end"])
    started = time.monotonic()
    publish_all(publisher, channels)
    assert drain(subscriber) == channels
    assert time.monotonic() - started < 8.0


def test_unsubscribing_a_pattern(bus: Bus, publisher: Publisher, subscribers: Subscribers) -> None:
    subscriber = subscribers(bus, ["votes.*", "zz.end"], pattern=True)
    subscriber.subscribe("votes.*", pattern=True)
    subscriber.unsubscribe("votes.*", pattern=True)
    publish_all(publisher, ["votes.alice"])
    assert drain(subscriber) == ["votes.alice"]  # subscribed twice, removed once
    subscriber.unsubscribe("votes.*", pattern=True)
    publish_all(publisher, ["votes.alice"])
    assert drain(subscriber) == []
    with pytest.raises(ValueError, match="no pattern"):
        subscriber.unsubscribe("votes.*", pattern=True)


def test_the_envelope_carries_the_real_channel(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "votes.>", pattern=True)
    publisher.put("votes.alice.final", {"vote": "yes"})
    message = subscriber.receive(block=True, timeout=5.0)
    assert message is not None
    assert (message.channel, message.message) == ("votes.alice.final", {"vote": "yes"})


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        ("votes.>.final", "'>' must be the last token"),
        ("votes..*", "single dots"),
        ("votes.a*", "stand alone"),
        ("vo*tes", "stand alone"),
        ("votes.>>", "stand alone"),
        (".*", "single dots"),
        ("votes.*.", "single dots"),
    ],
)
def test_invalid_patterns_are_refused_clearly(bus: Bus, pattern: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint) as raised:
        bus.subscribe(pattern, pattern=True)
    assert repr(pattern) in str(raised.value)
    assert "votes.*" in str(raised.value) or "votes.>" in str(raised.value)  # an example
    with bus.subscribe("ok") as subscriber, pytest.raises(ValueError, match=hint):
        subscriber.subscribe(["fine.*", pattern], pattern=True)


def test_a_refused_pattern_leaves_no_half_subscription(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "zz.end")
    with pytest.raises(ValueError):
        subscriber.subscribe(["fine.*", "bad.>.x"], pattern=True)
    publish_all(publisher, ["fine.one"])
    received: list[Any] = drain(subscriber)
    assert received == []


def test_a_refused_unsubscribe_removes_nothing(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["kept", "zz.end"])
    with pytest.raises(ValueError, match="no channel 'never'"):
        subscriber.unsubscribe(["kept", "never"])
    with pytest.raises(ValueError, match="no channel 'kept'"):
        subscriber.unsubscribe(["kept", "kept"])  # subscribed once, removed twice
    publish_all(publisher, ["kept"])
    assert drain(subscriber) == ["kept"]
