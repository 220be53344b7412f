"""``memory://NAME``: every party in one process, frames handed over in memory.

No hub and no socket: a send appends the frames to the queue of every receiver
whose prefixes match, under one lock, so order is kept per sender. A receiver
that falls ``receive_high_water_mark`` frames behind loses the newest frames,
as a ZeroMQ subscriber would; the sequence numbers above make that visible.
A request no receiver wants is answered at once, with the empty body that says no
one subscribes, as the ZeroMQ hub does; an answer no requester wants is counted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

from .._codec import CONTROL, HEADER_SIZE, REPLY, REQUEST_MARK_BYTE, request_reply_to
from .._settings import BusSettings
from ._inbox import Inbox
from .base import Frames, Hub, Receiver, Sender, Transport


class _Exchange:
    """The receivers of one memory address."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.receivers: list[MemoryReceiver] = []
        self.hub_held = False  # one hub per address, as with sockets
        self.counters = {"no_responders": 0, "replies_dropped": 0}

    def deliver(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        with self.lock:
            for topic, body in messages:
                wanted = False
                for receiver in self.receivers:
                    if receiver.accepts(topic):
                        receiver.push([topic, body])
                        wanted = True
                if not wanted:
                    self._unwanted(topic, body)

    # Called with the lock held.
    def _unwanted(self, topic: bytes, body: bytes) -> None:
        """A request no one wants is answered at once; an answer no one wants, counted."""
        if topic.startswith(REPLY):
            self.counters["replies_dropped"] += 1
        elif topic[:1] != CONTROL and len(body) > HEADER_SIZE:
            if body[HEADER_SIZE] != REQUEST_MARK_BYTE:
                return
            reply_to = request_reply_to(body)
            if reply_to is None:
                return
            self.counters["no_responders"] += 1
            answer = REPLY + reply_to
            for receiver in self.receivers:
                if receiver.accepts(answer):
                    receiver.push([answer, b""])


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
        return dict(self._exchange.counters)

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


def _forget_after_fork() -> None:
    """A forked child starts with no receivers, and locks no thread of it can hold."""
    global _exchanges_lock
    _exchanges.clear()
    _exchanges_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
