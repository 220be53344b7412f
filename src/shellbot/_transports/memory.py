"""``memory://NAME``: every party in one process, frames handed over in memory.

No hub and no socket: a send appends the frames to the queue of every receiver
whose prefixes match, under one lock, so order is kept per sender. A receiver
that falls ``receive_high_water_mark`` frames behind loses the newest frames,
as a ZeroMQ subscriber would; the sequence numbers above make that visible.
A request no receiver wants is answered at once, with the empty body that says no
one subscribes, as the ZeroMQ hub does; an answer no requester wants is counted.
A queue group's members are given their share by credit, as the ZeroMQ hub
gives it (``_shares``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from .. import _process
from .._codec import (
    CONTROL,
    CONTROL_BYTE,
    HEADER_SIZE,
    REPLY,
    REQUEST_MARK_BYTE,
    TERMINATOR,
    request_reply_to,
)
from .._settings import BusSettings
from ._inbox import Inbox
from ._shares import CREDIT_STEP, Assignment, Shares
from .base import Frames, Hub, Receiver, Sender, Transport


class _Exchange:
    """The receivers of one memory address."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.receivers: list[MemoryReceiver] = []
        self.hub_held = False  # one hub per address, as with sockets
        self.counters = {"no_responders": 0, "replies_dropped": 0}
        self.shares = Shares()

    def deliver(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        with self.lock:
            shares = self.shares
            for topic, body in messages:
                wanted = False
                for receiver in self.receivers:
                    if receiver.accepts(topic):
                        receiver.push([topic, body])
                        wanted = True
                if shares.members and topic[0] != CONTROL_BYTE:
                    assignments = shares.route(topic, [topic, body], 1, len(body))
                    if assignments is not None:  # a group wants it (now, or once it has room)
                        wanted = True
                        self.hand(assignments)
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

    # Called with the lock held.
    def hand(self, assignments: Sequence[Assignment] | list[Assignment]) -> None:
        for member, frames in assignments:
            if not member.owner.push(frames):
                self.shares.lost += 1  # over its inbox's limit


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
    def __init__(self, exchange: _Exchange, high_water_mark: int, group: str | None) -> None:
        self._exchange = exchange
        self._prefixes: dict[bytes, int] = {}
        self._inbox = Inbox(high_water_mark)
        self._group = group
        self._delivered = 0  # of a group member: its share, taken from the inbox
        self._done = 0  # of those, what the program is done with, as last told
        self._credited = 0
        with exchange.lock:
            exchange.receivers.append(self)

    # Called with the exchange lock held.
    def accepts(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._prefixes)

    def push(self, frames: Frames) -> bool:
        return self._inbox.push(frames)

    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        exchange = self._exchange
        with exchange.lock:
            if self._group is not None and prefix[:1] != CONTROL:
                exact = prefix.endswith(TERMINATOR)
                exchange.hand(exchange.shares.join(self, self._group, prefix, exact, self))
                return
            self._prefixes[prefix] = self._prefixes.get(prefix, 0) + 1

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        exchange = self._exchange
        with exchange.lock:
            if self._group is not None and prefix[:1] != CONTROL:
                exchange.hand(exchange.shares.leave(self, prefix))
                return
            count = self._prefixes.get(prefix, 0) - 1
            if count > 0:
                self._prefixes[prefix] = count
            else:
                self._prefixes.pop(prefix, None)

    def receive(self, timeout: float | None) -> Frames | None:
        frames = self._inbox.receive(timeout)
        if self._group is not None and frames is not None and frames[0][:1] != CONTROL:
            self._delivered += 1
        return frames

    def receive_more(self) -> Iterator[Frames]:
        if self._group is None:
            return self._inbox.receive_more()
        return self._counted(self._inbox.receive_more())

    def _counted(self, frames: Iterator[Frames]) -> Iterator[Frames]:
        for one in frames:
            if one[0][:1] != CONTROL:
                self._delivered += 1
            yield one

    def settle(self, unhanded: int) -> None:
        done = self._done = self._delivered - unhanded
        if done <= self._credited or (unhanded and done < self._credited + CREDIT_STEP):
            return
        self._credited = done
        exchange = self._exchange
        with exchange.lock:
            exchange.hand(exchange.shares.credit(self, done))

    async def wait_async(self, timeout: float | None) -> bool:
        return await self._inbox.wait_async(timeout)

    def close(self) -> None:
        exchange = self._exchange
        with exchange.lock:
            if self in exchange.receivers:
                exchange.receivers.remove(self)
            if self._group is not None:  # what it holds is lost, counted; the rest goes on
                exchange.hand(exchange.shares.credit(self, self._done))
                exchange.hand(exchange.shares.leave_all(self))
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
        exchange = self._exchange
        shares = exchange.shares
        with exchange.lock:
            return {
                "group_members": len(shares.members),
                "group_waiting": shares.waiting(),
                "group_lost": shares.lost,
                **exchange.counters,
            }

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

    def open_receiver(self, durable: str | None = None, group: str | None = None) -> Receiver:
        self.check_storage(durable)
        return MemoryReceiver(self._exchange, self.settings.receive_high_water_mark, group)

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
