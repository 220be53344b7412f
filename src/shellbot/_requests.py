"""Requests and their answers: the one reply inbox of a process, and what waits on it.

A request is a message on its channel that carries a reply address (see ``_codec``):
the inbox's identity and the request's correlation id. Every request of a process on
one address shares one inbox, a receiver subscribed once to ``REPLY`` + its identity,
read by whoever waits (see ``Requester``), which hands each answer to the request it
names (``_pending.Pending``). A correlation id is used once: an answer to a request that has ended
(a late one, or one more than it asked for) finds no one, and is counted ``late``.

When no one subscribes to the request's channel, the hub (the ZeroMQ hub, the memory
exchange, a NATS server's no-responders status) answers with an empty body at once:
``NoResponders``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _codec, _process
from ._message import Message
from ._pending import Pending, Waiting
from ._publishing import outbox as _outbox
from ._settings import BusSettings
from ._transports import transport_for
from .errors import ClosedError, NoResponders, TimeoutError

READ_SLICE = 0.05  # whoever reads the inbox looks whether to stop or hand over this often
_NOT_KNOWN = 1 << 30  # probe copies needed before the first probe said how many


class Requester:
    """The reply inbox of this process on one address, and its requests.

    Whoever waits reads the inbox (leader and followers): a thread waiting for its
    answer takes the inbox's receiver when no one else reads it, and hands every
    answer that comes to its request, waking the others; when it is done, another
    waiting thread takes over. So a lone requester reads its own answer, with no
    thread between the socket and it. Answers to asyncio requests are read by a
    thread of the inbox's own, which reads only while such requests wait.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._outbox = _outbox.outbox_for(settings)
        identity = secrets.token_hex(8).encode()
        self._identity = identity + b":"
        self._prefix = _codec.REPLY + self._identity
        self.pending = Pending(settings.send_high_water_mark)
        self._receiver = transport_for(settings).open_receiver()
        self._receiver.subscribe(self._prefix)
        self._probe = _codec.PROBE + secrets.token_hex(8).encode()
        self._receiver.subscribe(self._probe)  # after the inbox: its echo proves both
        self._echoes: set[int] = set()
        self._needed = _NOT_KNOWN
        self._ready = False
        self._reading = threading.Lock()  # held by whoever reads the receiver
        self._stopping = False
        self._asynchronous = 0  # asyncio requests waiting: the inbox's thread reads for them
        self._thread: threading.Thread | None = None

    @property
    def counters(self) -> dict[str, int]:
        with self.pending.lock:
            return dict(self.pending.counters)

    # -- the requester's side
    def send(self, channel: Any, message: Any, timeout: float, count: int | None) -> Waiting:
        """Sends a request and returns it waiting (``wait()`` it, then ``end()`` it)."""
        if not isinstance(channel, str):
            raise TypeError(
                f"A request goes to one channel (str); it got {type(channel).__name__} "
                f"{channel!r}: use request_all() on each channel to ask several"
            )
        _codec.check_channels(channel)
        data = _codec.encode(message, self.settings.max_message_size)
        if not self._ready:
            self._wait_ready(channel, timeout, time.monotonic() + timeout)
        waiting = self.pending.open(channel, count)
        try:
            reply_to = self._identity + b"%x" % waiting.correlation
            self._outbox.request(channel, data, reply_to)
        except BaseException:
            self.pending.end(waiting)
            raise
        return waiting

    def wait(self, waiting: Waiting, timeout: float) -> None:
        """Waits at most ``timeout`` seconds for ``waiting`` to end, reading the inbox
        when no one else does."""
        self._wait_for(lambda: waiting.done, time.monotonic() + timeout)

    async def wait_async(self, waiting: Waiting, timeout: float) -> None:
        pending = self.pending
        with pending.lock:
            self._asynchronous += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._read_for_asyncio, name="shellbot-replies", daemon=True
                )
                self._thread.start()
            pending.changed.notify_all()
        try:
            await waiting.wait_async(timeout, pending.lock)
        finally:
            with pending.lock:
                self._asynchronous -= 1

    def _wait_ready(self, channel: str, timeout: float, deadline: float) -> None:
        """Waits until the inbox's subscription is live at the hub: an answer that came
        before it would be lost."""
        interval = 0.005
        while not self._ready:
            now = time.monotonic()
            if now >= deadline or self._stopping:
                if self._stopping:
                    raise ClosedError("The process is stopping: the request was not sent")
                raise TimeoutError(
                    f"No hub answered at {self.settings.address} within {timeout:g} s, so "
                    f"the request on {channel!r} was not sent: start a publisher or "
                    "`shellbot-bus hub` there"
                )
            needed = self._outbox.send_probe(self._probe)
            with self.pending.lock:
                self._needed = needed
                self._ready = len(self._echoes) >= needed
            self._wait_for(lambda: self._ready, min(deadline, now + interval))
            interval = min(interval * 2, 0.2)

    def _wait_for(self, done: Callable[[], bool], deadline: float) -> None:
        """Until ``done()`` or ``deadline``: reads the inbox (the leader), or waits for
        the one who reads to hand over (a follower)."""
        pending = self.pending
        reading = self._reading
        while True:
            with pending.lock:
                remaining = deadline - time.monotonic()
                if done() or remaining <= 0 or self._stopping:
                    return
                if not reading.acquire(False):
                    pending.changed.wait(min(remaining, READ_SLICE))
                    continue
            try:
                self._read(done, deadline)
            finally:
                reading.release()
                with pending.lock:
                    pending.changed.notify_all()  # another one waiting may read now

    def _read(self, done: Callable[[], bool], deadline: float) -> None:
        """Reads the inbox (holding ``_reading``) until ``done()`` or ``deadline``."""
        receive = self._receiver.receive
        while not done() and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                frames = receive(min(remaining, READ_SLICE))
            except Exception:  # closed, or refused: every request waiting ends
                self.pending.close(ClosedError("The reply inbox of this process closed"))
                return
            if frames is not None:
                self._take(frames)

    def _take(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        topic, body = frames
        prefix = self._prefix
        if topic.startswith(prefix):
            try:
                correlation = int(topic[len(prefix) :], 16)
            except ValueError:
                return
            self.pending.answer(correlation, body)
        elif topic == self._probe and len(body) >= _codec.HEADER_SIZE:
            pending = self.pending
            with pending.lock:
                self._echoes.add(_codec.HEADER.unpack_from(body)[0])
                if len(self._echoes) >= self._needed:
                    self._ready = True
                    pending.changed.notify_all()

    def _read_for_asyncio(self) -> None:
        """The inbox's thread: reads while asyncio requests wait (and no one else does)."""
        pending = self.pending
        while not self._stopping:
            with pending.lock:
                while not self._stopping and not self._asynchronous:
                    pending.changed.wait(1.0)
            self._wait_for(lambda: not self._asynchronous, time.monotonic() + 1.0)

    def close(self) -> None:
        """Ends every request waiting (``ClosedError``) and frees the inbox."""
        self._stopping = True
        self.pending.close(ClosedError("The process is stopping: the request ended unanswered"))
        if self._reading.acquire(timeout=READ_SLICE * 4):  # whoever reads lets go
            self._receiver.close()
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(READ_SLICE * 4)


def outcome(waiting: Waiting, timeout: float, first_only: bool) -> list[Message]:
    """The answers of a request that ended, or the error that says why there are none."""
    if waiting.error is not None:
        raise waiting.error
    if waiting.no_responders:
        raise NoResponders(
            f"No one subscribes to channel {waiting.channel!r}: the request found no "
            "responder (subscribe a responder to it first)"
        )
    if first_only and not waiting.answers:
        raise TimeoutError(
            f"No answer to the request on channel {waiting.channel!r} within {timeout:g} s: "
            "its subscribers did not reply (message.reply(answer))"
        )
    return list(waiting.answers)


class Replier:
    """What ``Message.reply`` calls for a request that carried ``reply_at``: an object,
    not a closure, so that a request travels to another process (pickled) and is
    answered from there."""

    __slots__ = ("reply_at", "settings")

    def __init__(self, settings: BusSettings, reply_at: bytes) -> None:
        self.settings = settings
        self.reply_at = reply_at

    def __call__(self, answer: Any) -> None:
        data = _codec.encode(answer, self.settings.max_message_size)  # raises in the responder
        _outbox.outbox_for(self.settings).reply(self.reply_at, data)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Replier, (self.settings, self.reply_at))


_requesters: dict[BusSettings, Requester] = {}
_requesters_lock = threading.Lock()


def requester_for(settings: BusSettings) -> Requester:
    """This process's requester of these settings, made on first use."""
    requester = _requesters.get(settings)
    if requester is None:
        with _requesters_lock:
            requester = _requesters.get(settings)
            if requester is None:
                requester = _requesters[settings] = Requester(settings)
                _outbox.stop_at_exit(id(requester), requester.close)
    return requester


def existing_requester(settings: BusSettings) -> Requester | None:
    return _requesters.get(settings)


@_process.after_fork
def _forget_after_fork() -> None:
    global _requesters_lock
    _requesters.clear()
    _requesters_lock = threading.Lock()
