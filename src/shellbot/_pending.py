"""The table of a process's requests waiting for answers, by correlation id: pure,
no I/O (``_requests`` reads the inbox and hands answers here)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from typing import Any

import orjson

from . import _codec
from ._message import Message
from .errors import ClosedError, TimeoutError


def check_timeout(timeout: Any) -> float:
    """A request's timeout: a positive number of seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout is a number of seconds; it got {type(timeout).__name__}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout is a positive, finite number of seconds; it got {timeout!r}")
    return float(timeout)


def check_count(count: Any) -> int | None:
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count is None or a whole number of answers from 1; it got {count!r}")
    return count


class Waiting:
    """One request waiting for its answers: ended by enough answers, by the notice that
    no one subscribes, by the requester's timeout, or by the inbox closing."""

    __slots__ = ("_async", "_done", "answers", "channel", "correlation", "error", "no_responders")

    def __init__(self, channel: str, correlation: int) -> None:
        self.channel = channel
        self.correlation = correlation
        self.answers: list[Message] = []
        self.no_responders = False
        self.error: ClosedError | None = None
        self._done = threading.Event()
        self._async: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def finish(self) -> None:
        """From the inbox's thread (with the table's lock held): wakes the requester."""
        self._done.set()
        waiter = self._async
        if waiter is not None:
            loop, future = waiter
            with contextlib.suppress(RuntimeError):  # that loop is closed: no one waits there
                loop.call_soon_threadsafe(_resolve, future)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait_async(self, timeout: float, lock: threading.Lock) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with lock:
            if self._done.is_set():
                return
            self._async = (loop, future)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(future, max(0.0, timeout))


class Pending:
    """The requests of a process waiting for answers, by correlation id; no I/O.

    At most ``limit`` wait at once: each one ends by its own timeout at the latest, so
    a flood of requests that no one answers costs that much memory, no more.
    """

    def __init__(self, limit: int) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a request ended (or more): look again
        self._limit = max(1, limit)
        self._waiting: dict[int, tuple[Waiting, int | None]] = {}
        self._next = 0
        self._closed: ClosedError | None = None
        self.counters = {
            "requests": 0,  # sent
            "answers": 0,  # handed to a request
            "late": 0,  # for a request that had ended (or never was): dropped
            "no_responders": 0,
            "timeouts": 0,  # requests that ended at their timeout with no answer
            "dropped": 0,  # answers that are not JSON, or of the wrong shape
        }

    def __len__(self) -> int:
        return len(self._waiting)

    def open(self, channel: str, count: int | None) -> Waiting:
        """A new request, waiting for ``count`` answers (None: as many as come)."""
        with self.lock:
            if self._closed is not None:
                raise self._closed
            if len(self._waiting) >= self._limit:
                raise TimeoutError(
                    f"{len(self._waiting)} requests of this process already wait for answers "
                    f"(at most bus.send_high_water_mark): the request on {channel!r} was not sent"
                )
            self._next += 1
            waiting = Waiting(channel, self._next)
            self._waiting[waiting.correlation] = (waiting, count)
            self.counters["requests"] += 1
            return waiting

    def end(self, waiting: Waiting) -> None:
        """The requester is done with ``waiting``: answers to it from now on are late."""
        with self.lock:
            self._waiting.pop(waiting.correlation, None)
            if not waiting.answers and not waiting.no_responders and waiting.error is None:
                self.counters["timeouts"] += 1

    def answer(self, correlation: int, body: bytes) -> None:
        """Hands an answer (a reply's body; empty: no one subscribes) to its request."""
        with self.lock:
            entry = self._waiting.get(correlation)
            if entry is None:
                self.counters["late"] += 1
                return
            waiting, count = entry
            if not body:
                waiting.no_responders = True
                self.counters["no_responders"] += 1
                del self._waiting[correlation]
                waiting.finish()
                self.changed.notify_all()
                return
            if len(body) < _codec.HEADER_SIZE:
                self.counters["dropped"] += 1
                return
            try:
                message = orjson.loads(body[_codec.HEADER_SIZE :])
            except orjson.JSONDecodeError:
                try:
                    message = _codec.decode_wide(body[_codec.HEADER_SIZE :])
                except ValueError:
                    self.counters["dropped"] += 1
                    return
            sender, sequence = _codec.HEADER.unpack_from(body)
            waiting.answers.append(Message(waiting.channel, message, sender, sequence))
            self.counters["answers"] += 1
            if count is not None and len(waiting.answers) >= count:
                del self._waiting[correlation]
                waiting.finish()
                self.changed.notify_all()

    def close(self, error: ClosedError) -> None:
        """Ends every request waiting, with ``error``, and refuses new ones."""
        with self.lock:
            self._closed = error
            for waiting, _ in self._waiting.values():
                waiting.error = error
                waiting.finish()
            self._waiting.clear()
            self.changed.notify_all()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
