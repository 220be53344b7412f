"""``memory://NAME``: every party in one process, frames handed over in memory.

No hub and no socket: a send appends the frames to the queue of every receiver
whose prefixes match, under one lock, so order is kept per sender. A receiver
that falls ``receive_high_water_mark`` frames behind loses the newest frames,
as a ZeroMQ subscriber would; the sequence numbers above make that visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Sequence

from .._settings import BusSettings
from .base import Frames, Hub, Receiver, Sender, Transport


class _Exchange:
    """The receivers of one memory address."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.receivers: list[MemoryReceiver] = []
        self.hub_held = False  # one hub per address, as with sockets

    def deliver(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        with self.lock:
            for topic, body in messages:
                for receiver in self.receivers:
                    if receiver.accepts(topic):
                        receiver.push([topic, body])


_exchanges: dict[str, _Exchange] = {}
_exchanges_lock = threading.Lock()


def _exchange(address: str) -> _Exchange:
    with _exchanges_lock:
        return _exchanges.setdefault(address, _Exchange())


class MemorySender(Sender):
    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        self._exchange.deliver(messages)

    def close(self, linger: float) -> None:
        pass


class MemoryReceiver(Receiver):
    def __init__(self, exchange: _Exchange, high_water_mark: int) -> None:
        self._exchange = exchange
        self._high_water_mark = high_water_mark
        self._prefixes: dict[bytes, int] = {}
        self._queue: deque[Frames] = deque()
        self._arrived = threading.Condition(threading.Lock())
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closed = False
        self._interrupted = False
        with exchange.lock:
            exchange.receivers.append(self)

    # Called with the exchange lock held.
    def accepts(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._prefixes)

    def push(self, frames: Frames) -> None:
        with self._arrived:
            if len(self._queue) >= self._high_water_mark:
                return
            self._queue.append(frames)
            self._arrived.notify()
            waiters, self._waiters = self._waiters, []
        if waiters:
            _wake(waiters)

    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        with self._exchange.lock:
            self._prefixes[prefix] = self._prefixes.get(prefix, 0) + 1

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        with self._exchange.lock:
            count = self._prefixes.get(prefix, 0) - 1
            if count > 0:
                self._prefixes[prefix] = count
            else:
                self._prefixes.pop(prefix, None)

    def receive(self, timeout: float | None) -> Frames | None:
        with self._arrived:
            if not self._queue and timeout != 0:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._queue and not self._closed and not self._interrupted:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._arrived.wait(remaining)
            return self._queue.popleft() if self._queue else None

    async def wait_async(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._arrived:
            if self._queue or self._closed or self._interrupted:
                return True
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._arrived:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))

    def close(self) -> None:
        with self._exchange.lock:
            if self in self._exchange.receivers:
                self._exchange.receivers.remove(self)
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def interrupt(self) -> None:
        with self._arrived:
            self._interrupted = True
            self._arrived.notify_all()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, future in waiters:
        with contextlib.suppress(RuntimeError):  # that loop is closed: no one waits there
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MemoryHub(Hub):
    """Holds the address; the exchange itself delivers, so there is nothing to forward."""

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def stats(self) -> dict[str, int]:
        return {}

    def close(self, drain: float) -> None:
        with self._exchange.lock:
            self._exchange.hub_held = False


class MemoryTransport(Transport):
    process_local = True

    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self._exchange = _exchange(settings.address)

    def open_sender(self) -> Sender:
        return MemorySender(self._exchange)

    def open_receiver(self) -> Receiver:
        return MemoryReceiver(self._exchange, self.settings.receive_high_water_mark)

    def open_hub(self) -> Hub | None:
        with self._exchange.lock:
            if self._exchange.hub_held:
                return None
            self._exchange.hub_held = True
        return MemoryHub(self._exchange)


def _forget_after_fork() -> None:
    """A forked child starts with no receivers, and locks no thread of it can hold."""
    global _exchanges_lock
    _exchanges.clear()
    _exchanges_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
