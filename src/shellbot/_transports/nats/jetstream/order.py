"""Each publisher's order on a channel, kept across a stream's retried publishing.

A publisher's run that the stream's leader lost (killed with it) is published
again, and stored after runs that followed it: the stream then holds them out
of order. A durable receiver hands frames on through ``PublisherOrder``, which
holds back a frame that comes after a gap in its publisher's sequence numbers
on its channel until the gap is filled, or, for a gap that never fills (a
message given up as ``not_stored``), until ``hold`` seconds passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ...._codec import BATCH_SEPARATOR, HEADER, HEADER_SIZE

_unpack_header = HEADER.unpack_from


def without_first(body: bytes, count: int) -> bytes | None:
    """A run without its first ``count`` messages (None when that leaves none): what a
    durable subscriber's predecessor of its name was handed already."""
    parts = body[HEADER_SIZE:].split(BATCH_SEPARATOR)
    if count >= len(parts):
        return None
    sender, first = _unpack_header(body)
    return HEADER.pack(sender, first + count) + BATCH_SEPARATOR.join(parts[count:])


class _Held(NamedTuple):
    first: int
    last: int
    stream: int
    reply: bytes
    frame: list[bytes]
    deadline: float


class PublisherOrder:
    """Frames of a durable consumer, handed to ``push(stream, reply, frame)`` in each
    publisher's order per channel."""

    def __init__(self, hold: float, push: Callable[[int, bytes, list[bytes]], None]) -> None:
        self._hold = hold
        self._push = push
        self._pushed: dict[tuple[bytes, int], int] = {}  # (topic, sender) -> last sequence
        self._held: dict[tuple[bytes, int], list[_Held]] = {}

    def take(self, stream: int, reply: bytes, topic: bytes, body: bytes) -> None:
        if len(body) < HEADER_SIZE:  # unreadable: the subscriber drops and counts it
            self._push(stream, reply, [topic, body])
            return
        sender, first = _unpack_header(body)
        last = first + body.count(BATCH_SEPARATOR, HEADER_SIZE)
        key = (topic, sender)
        previous = self._pushed.get(key)
        if previous is not None and first > previous + 1:
            held = self._held.setdefault(key, [])
            held.append(_Held(first, last, stream, reply, [topic, body], self._deadline()))
            held.sort()
            return
        self._push(stream, reply, [topic, body])
        if previous is None or last > previous:
            self._pushed[key] = last
        if key in self._held:
            self._release(key)

    def _deadline(self) -> float:
        return time.monotonic() + self._hold

    def _release(self, key: tuple[bytes, int], give_up: bool = False) -> None:
        """Pushes the held frames of ``key`` that follow what was pushed; with
        ``give_up``, the first one held too, whatever it follows."""
        held = self._held[key]
        while held and (give_up or held[0].first <= self._pushed[key] + 1):
            give_up = False
            frame = held.pop(0)
            self._push(frame.stream, frame.reply, frame.frame)
            self._pushed[key] = max(self._pushed[key], frame.last)
        if not held:
            del self._held[key]

    def release_due(self) -> None:
        """Gives up the gaps that waited ``hold`` seconds in vain."""
        now = time.monotonic()
        for key in [key for key, held in self._held.items() if held[0].deadline <= now]:
            self._release(key, give_up=True)

    def held_streams(self) -> Iterator[int]:
        """The stream sequences of the frames held back."""
        for held in self._held.values():
            for frame in held:
                yield frame.stream

    def forget_held(self) -> None:
        """The consumer is made anew: what is held comes again."""
        self._held.clear()
