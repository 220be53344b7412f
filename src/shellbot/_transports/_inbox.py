"""The queue of frames between a transport's own thread and the subscriber's.

A transport that receives in a thread of its own (the memory exchange, called by
senders; the NATS client's event loop) pushes frames here, and the subscriber
takes them with the contract's ``receive``, ``receive_more`` and ``wait_async``.
Past ``high_water_mark`` frames the newest are dropped, as a ZeroMQ socket
drops them: the sequence numbers above make the loss visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator

from .base import Frames

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Inbox:
    def __init__(self, high_water_mark: int) -> None:
        self._high_water_mark = high_water_mark if high_water_mark > 0 else 1 << 62
        self._queue: deque[Frames] = deque()
        self._arrived = threading.Condition(threading.Lock())
        self._sleeping = False  # a thread waits in receive(): push() must notify it
        self._waiters: list[_Waiter] = []  # event loops waiting in wait_async()
        self._closed = False
        self._interrupted = False
        self._report: Exception | None = None  # raised once, by receive() on an empty queue

    def push(self, frames: Frames) -> bool:
        """Queues frames from any thread; False when they were dropped (queue full)."""
        queue = self._queue
        if len(queue) >= self._high_water_mark:
            return False
        queue.append(frames)
        # Only a sleeping receiver or an async waiter costs a lock: receive() says it
        # sleeps before it looks at the queue, so one of the two sides sees the other.
        if self._sleeping or self._waiters:
            with self._arrived:
                self._arrived.notify()
                waiters, self._waiters = self._waiters, []
            _wake(waiters)
        return True

    def receive(self, timeout: float | None) -> Frames | None:
        queue = self._queue
        if queue:
            return queue.popleft()
        if self._report is not None:
            self._raise_report()
        if timeout == 0:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._arrived:
            self._sleeping = True
            try:
                while not queue and not self._closed and not self._interrupted and not self._report:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._arrived.wait(remaining)
            finally:
                self._sleeping = False
        if not queue and self._report is not None:
            self._raise_report()
        return queue.popleft() if queue else None

    def report(self, error: Exception) -> None:
        """From any thread: the next ``receive()`` that finds no frame raises ``error``
        (once), and a wait in progress ends."""
        with self._arrived:
            self._report = error
            self._arrived.notify_all()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def _raise_report(self) -> None:
        with self._arrived:
            error, self._report = self._report, None
        if error is not None:
            raise error

    def receive_more(self) -> Iterator[Frames]:
        queue = self._queue
        while queue:
            yield queue.popleft()

    async def wait_async(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._arrived:
            if self._queue or self._closed or self._interrupted or self._report:
                return True
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return bool(self._queue)
        finally:
            with self._arrived:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))

    @property
    def closed(self) -> bool:
        return self._closed

    def interrupt(self) -> None:
        self._end(closing=False)

    def close(self) -> None:
        self._end(closing=True)

    def _end(self, closing: bool) -> None:
        with self._arrived:
            if closing:
                self._closed = True
            else:
                self._interrupted = True
            self._arrived.notify_all()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)


def _wake(waiters: list[_Waiter]) -> None:
    for loop, future in waiters:
        with contextlib.suppress(RuntimeError):  # that loop is closed: no one waits there
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
