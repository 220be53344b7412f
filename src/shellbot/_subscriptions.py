"""What a subscriber asked for: channels, patterns and everything (``''``), in one place.

Each subscription is held as the ``(prefix, pattern)`` that the receiver subscribes
to: a channel's topic and None, ``b""`` and None for every channel, or a pattern's
literal start and the pattern itself. The same subscription may be held several
times: it is removed when each was unsubscribed. ``Subscriptions.topics`` keeps what
the decoder reads per topic (``Topic``): whether it is a channel subscribed to
exactly, and the sequence numbers seen on it.
"""

from __future__ import annotations

import re
from collections import Counter

from . import _codec

# What a receiver subscribes to for one subscription: the prefix, and the pattern
# (passed too, so that a broker may match it on the server).
Key = tuple[bytes, str | None]
EVERYTHING: Key = (b"", None)


class Topic:
    """What a subscriber keeps per topic: whether it subscribed to it exactly (not for a
    topic that reached it through a pattern or ''), and the last sequence number seen
    from each sender, the latest sender's apart (most channels have one)."""

    __slots__ = ("exact", "last", "others", "sender")

    def __init__(self) -> None:
        self.exact = False
        self.sender: int | None = None
        self.last = 0
        self.others: dict[int, int] | None = None

    def missed(self, sender: int, first: int, last: int) -> int:
        """Records messages ``first`` to ``last`` of ``sender``; returns the gap before."""
        if sender == self.sender:
            previous: int | None = self.last
        else:
            if self.sender is not None:
                if self.others is None:
                    self.others = {}
                self.others[self.sender] = self.last
            previous = None if self.others is None else self.others.pop(sender, None)
            self.sender = sender
        self.last = last
        return first - previous - 1 if previous is not None and first > previous + 1 else 0


def compile_pattern(pattern: str) -> tuple[bytes, re.Pattern[str]]:
    """The transport prefix and the matcher of a NATS-style pattern (``a.*.c``, ``a.>``)."""
    tokens = pattern.split(".")
    parts: list[str] = []
    literal: list[str] = []
    wildcard_seen = False
    for index, token in enumerate(tokens):
        if token == "*":
            parts.append(r"[^.]+")
            wildcard_seen = True
        elif token == ">":
            if index != len(tokens) - 1:
                raise ValueError(
                    f"In the pattern {pattern!r}, '>' must be the last token, as in 'votes.>'"
                )
            parts.append(r".+")
            wildcard_seen = True
        elif not token or "*" in token or ">" in token:
            raise ValueError(
                f"The pattern {pattern!r} has the token {token!r}: tokens are separated by "
                "single dots, and '*' or '>' stand alone, as in 'votes.*' or 'votes.>'"
            )
        else:
            parts.append(re.escape(token))
            if not wildcard_seen:
                literal.append(token)
    prefix = ".".join(literal) + "." if literal else ""
    return prefix.encode("utf-8"), re.compile(r"\.".join(parts))


def is_pattern(channel: str) -> bool:
    # Any '*' or '>' makes a pattern, so that a misplaced one ('votes.a*') is refused
    # with a ValueError rather than taken silently as a plain channel name.
    return "*" in channel or ">" in channel


class Subscriptions:
    """The channels and patterns a subscriber holds, and how many times each."""

    def __init__(self) -> None:
        self.topics: dict[bytes, Topic] = {}
        self._held: Counter[Key] = Counter()
        self._patterns: dict[str, tuple[bytes, re.Pattern[str]]] = {}  # those held

    def add(self, names: tuple[str, ...], pattern: bool) -> list[Key]:
        """Holds each of ``names`` once more; returns what the receiver subscribes to.

        Raises ``ValueError`` for an invalid pattern or channel, before holding any of them.
        """
        for name in names:
            _codec.check_text(name)
        compiled = {
            name: compile_pattern(name)
            for name in names
            if pattern and is_pattern(name) and name not in self._patterns
        }
        self._patterns.update(compiled)
        keys = [self._key(name, pattern) for name in names]
        for key in keys:
            self._count(key, 1)
        return keys

    def remove(self, names: tuple[str, ...], pattern: bool) -> list[Key]:
        """Lets go of each of ``names`` once; returns what the receiver unsubscribes from.

        Raises ``ValueError`` for one not held (as many times), before letting go of any.
        """
        keys = [self._key(name, pattern) for name in names]
        for key, times in Counter(keys).items():
            if self._held[key] < times:
                raise ValueError(_not_held(key))
        for key in keys:
            self._count(key, -1)
        return keys

    def wants(self, topic: bytes) -> bool:
        """Whether a channel's topic not subscribed to exactly comes through '' or a
        pattern; ``UnicodeDecodeError`` when the topic names no channel."""
        channel = _codec.channel_of(topic)
        if EVERYTHING in self._held:
            return True
        return any(matcher.fullmatch(channel) for _, matcher in self._patterns.values())

    def topic(self, topic: bytes) -> Topic:
        """The state of a topic, made when it is first seen."""
        state = self.topics.get(topic)
        if state is None:
            state = self.topics[topic] = Topic()
        return state

    def _key(self, name: str, pattern: bool) -> Key:
        if pattern and is_pattern(name):
            held = self._patterns.get(name)  # one never held is counted as held 0 times
            return (b"" if held is None else held[0], name)
        return (_codec.topic_of(name), None) if name else EVERYTHING

    def _count(self, key: Key, change: int) -> None:
        held = self._held[key] + change
        if held:
            self._held[key] = held
        else:
            del self._held[key]
        prefix, pattern = key
        if pattern is not None:
            if not held:
                del self._patterns[pattern]
        elif prefix:  # a channel's topic: the decoder takes its messages first
            self.topic(prefix).exact = held > 0


def _not_held(key: Key) -> str:
    prefix, pattern = key
    if pattern is not None:
        return f"unsubscribe(): no pattern {pattern!r} to remove"
    if not prefix:
        return "unsubscribe(''): this subscriber is not subscribed to ''"
    return f"unsubscribe(): this subscriber has no channel {_codec.channel_of(prefix)!r}"
