"""A durable subscriber's bookkeeping (``durable=``, on a transport that stores messages).

The server delivers again what was not acknowledged, so a durable subscriber keeps
two records: what it took from each sender on each channel (``Seen``), to drop a
message that comes again, and the frames it took, oldest first (``Acknowledgements``),
to acknowledge each once the program was handed all of its messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Seen:
    """What a durable subscriber took from one sender on one channel: every sequence
    number from ``start`` up to ``floor``, and those in ``above``; ``highest`` is the
    latest. A message the server delivers again is one of these: dropped, not handed
    twice.

    Where the sender began for this subscriber is the first number it took (what came
    before is no gap of its: stored before its position). A run the publisher sent
    again is stored after those that followed it, so a number below ``start`` may still
    come, once: it is handed, and kept in ``below`` to know it again."""

    __slots__ = ("above", "below", "floor", "highest", "start")

    LIMIT = 10_000  # numbers kept above a gap (or below the start); beyond, the oldest go

    def __init__(self, first: int) -> None:
        self.start = first
        self.floor = self.highest = first - 1
        self.above: set[int] = set()
        self.below: set[int] = set()

    def record(self, sequence: int) -> int | None:
        """None when ``sequence`` was taken before; else how the count of gaps changed."""
        above = self.above
        if sequence < self.start:  # stored late: before where it began here
            below = self.below
            if sequence in below:
                return None
            if len(below) >= self.LIMIT:
                below.discard(min(below))
            below.add(sequence)
            return 0
        if sequence <= self.floor or sequence in above:
            return None
        before = self.highest - self.floor - len(above)
        if sequence == self.floor + 1:
            self.floor = sequence
            while self.floor + 1 in above:
                self.floor += 1
                above.discard(self.floor)
        else:
            above.add(sequence)
        self.highest = max(self.highest, sequence)
        change = self.highest - self.floor - len(above) - before
        if len(above) > self.LIMIT:  # a gap that never filled: counted missed, and let go
            self.floor = min(above)
            above.discard(self.floor)
            while self.floor + 1 in above:
                self.floor += 1
                above.discard(self.floor)
        return change


class Acknowledgements:
    """The frames a durable subscriber took, oldest first, each with how many of its
    messages the program was not handed yet, and how many were handed since the last
    ``settle()``: a frame is acknowledged once all of its messages were handed."""

    __slots__ = ("_acknowledge", "_head_size", "_unsettled", "handed")

    def __init__(self, acknowledge: Callable[[int, int], None]) -> None:
        self._acknowledge = acknowledge  # the receiver's: the oldest n frames are done with
        self._unsettled: deque[int] = deque()
        self._head_size = 0  # how many messages the oldest frame left gave the program
        self.handed = 0

    def taken(self, messages: int) -> None:
        """A frame of the server's was taken, with this many messages for the program."""
        if not self._unsettled:
            self._head_size = messages
        self._unsettled.append(messages)

    def close(self) -> None:
        """The subscriber closes: settles, and tells the receiver how many messages of the
        oldest frame left the program was handed, so that a successor of its name is not
        handed them again."""
        self.settle()
        if self._unsettled and (partly := self._head_size - self._unsettled[0]) > 0:
            self._acknowledge(0, partly)

    def settle(self) -> None:
        """Acknowledges the frames whose messages were all handed to the program, once it
        asks for more (or closes): the oldest first, as they came."""
        handed, self.handed = self.handed, 0
        unsettled = self._unsettled
        frames = 0
        while unsettled:
            left = unsettled[0]
            if left > handed:
                unsettled[0] = left - handed
                break
            handed -= left
            unsettled.popleft()
            frames += 1
            self._head_size = unsettled[0] if unsettled else 0
        if frames:
            self._acknowledge(frames, 0)
