"""``memory://NAME``: every party in one process, frames handed over in memory.

No hub and no socket: a send appends the frames to the queue of every receiver
whose prefixes match, under one lock, so order is kept per sender. A receiver
that falls ``receive_high_water_mark`` frames behind loses the newest frames,
as a ZeroMQ subscriber would; the sequence numbers above make that visible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from .. import _process
from .._settings import BusSettings
from ._inbox import Inbox
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
        self._prefixes: dict[bytes, int] = {}
        self._inbox = Inbox(high_water_mark)
        with exchange.lock:
            exchange.receivers.append(self)

    # Called with the exchange lock held.
    def accepts(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._prefixes)

    def push(self, frames: Frames) -> None:
        self._inbox.push(frames)

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
        return self._inbox.receive(timeout)

    def receive_more(self) -> Iterator[Frames]:
        return self._inbox.receive_more()

    async def wait_async(self, timeout: float | None) -> bool:
        return await self._inbox.wait_async(timeout)

    def close(self) -> None:
        with self._exchange.lock:
            if self in self._exchange.receivers:
                self._exchange.receivers.remove(self)
        self._inbox.close()

    @property
    def closed(self) -> bool:
        return self._inbox.closed

    def interrupt(self) -> None:
        self._inbox.interrupt()


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
        self.check_storage()
        return MemorySender(self._exchange)

    def open_receiver(self, durable: str | None = None) -> Receiver:
        self.check_storage(durable)
        return MemoryReceiver(self._exchange, self.settings.receive_high_water_mark)

    def open_hub(self) -> Hub | None:
        with self._exchange.lock:
            if self._exchange.hub_held:
                return None
            self._exchange.hub_held = True
        return MemoryHub(self._exchange)


@_process.after_fork
def _forget_after_fork() -> None:
    """A forked child starts with no receivers, and locks no thread of it can hold."""
    global _exchanges_lock
    _exchanges.clear()
    _exchanges_lock = threading.Lock()
