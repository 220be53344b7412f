"""Runs: consecutive messages of one sender on one channel, sent as one body.

Under a backlog a transport joins what has already arrived (or is already
queued) of one sender on one topic, numbered one after the other, into one
body: the first message whole, then the JSON texts of the others (their headers
dropped), each after ``BATCH_SEPARATOR``. The subscriber splits it again and
numbers the texts on from the first one's sequence. A joined body holds at most
``run_limit()`` bytes, its header included. Nothing waits for a run to grow: a
message alone leaves alone.

The rule is ``Run.takes``; the ZeroMQ hub's receive loop applies it inline, on
the same fields (a call per message costs it throughput, measured).
"""

from __future__ import annotations

from .._codec import BATCH_SEPARATOR, HEADER_SIZE

RUN_BYTES = 8 * 1024  # a joined body's JSON texts and separators, past its header
_JOINED = 1 - HEADER_SIZE  # what a message adds to a run: its text and a separator


def run_limit(max_message_size: int) -> int:
    """The most bytes a joined body holds, its header included: RUN_BYTES of texts, or
    ``bus.max_message_size`` when smaller."""
    return HEADER_SIZE + min(RUN_BYTES, max_message_size)


class Run:
    """The run being joined of one sender: ``parts`` is its first message whole (as the
    caller holds it: with its topic or not), then the JSON texts of the others."""

    __slots__ = ("next", "parts", "size", "topic")

    def __init__(self, topic: bytes, first: bytes, sequence: int, size: int) -> None:
        self.topic = topic
        self.parts = [first]
        self.next = sequence + 1  # the sequence number of the message that may join
        self.size = size  # bytes counted against the limit: the first's body, then texts

    def takes(self, topic: bytes, sequence: int, size: int, limit: int) -> bool:
        """Whether the sender's next message, on ``topic`` with ``sequence`` and a body of
        ``size`` bytes (header included), joins this run within ``limit`` bytes."""
        return sequence == self.next and topic == self.topic and self.size + size + _JOINED <= limit

    def add(self, text: bytes) -> None:
        """Joins the JSON text (its header dropped) of a message that ``takes`` allowed."""
        self.parts.append(text)
        self.next += 1
        self.size += len(text) + 1

    @property
    def count(self) -> int:
        return len(self.parts)

    def joined(self) -> bytes:
        """The run as one body: the first message, then each text after a separator."""
        return joined(self.parts)


def joined(parts: list[bytes]) -> bytes:
    """``parts`` (a run's first message whole, then texts) as one body."""
    return parts[0] if len(parts) == 1 else BATCH_SEPARATOR.join(parts)
