"""The ZeroMQ transport's endpoints: the sender (a PUSH socket to the hub's inbound
side), the receiver (a SUB socket the hub routes batches to), and the one map of
ZeroMQ's errors onto the bus's.

A PUSH socket may connect before any hub exists: what it sends waits in the
socket (up to ``bus.send_high_water_mark`` messages) until a hub binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator, Sequence

import zmq

from ... import errors
from ..._codec import CONTROL, ROUTE, ROUTE_REQUEST
from ..._settings import BusSettings
from ..base import Frames, Receiver, Sender
from .curve import secure_and_watch, unwatch
from .sockets import (
    NOBLOCK,
    POLLIN,
    RECONNECT_INTERVAL_MS,
    SNDMORE,
    connect_address,
    inbound_address,
    keep_alive,
    milliseconds,
    poll,
    recv,
    send,
)

# A hub that stops cleanly drops new connections' SYNs (see ``handover``): a sender's
# connection attempt that meets it starts again after this, rather than at the kernel's
# SYN retries (1 s, 3 s, 7 s...), and so reaches the next hub.
CONNECT_TIMEOUT_MS = 1000


def _receive_frames(socket: zmq.Socket) -> Frames:
    """The frames of the next message (``zmq.Again`` when none waits)."""
    first = recv(socket, NOBLOCK, False)
    if not first.more:
        return [first.bytes]
    second = recv(socket, NOBLOCK, False)
    if not second.more:
        return [first.bytes, second.bytes]
    frames = [first.bytes, second.bytes]
    more = True
    while more:
        frame = recv(socket, NOBLOCK, False)
        frames.append(frame.bytes)
        more = frame.more
    return frames


def _poll_in(socket: zmq.Socket, timeout: float | None) -> bool:
    """Waits at most ``timeout`` seconds (None: forever) for ``socket`` to be readable."""
    timeout_ms = milliseconds(timeout)
    return bool(poll([(socket, POLLIN)], -1 if timeout_ms is None else timeout_ms))


class ZmqSender(Sender):
    def __init__(self, context: zmq.Context, settings: BusSettings) -> None:
        self._address = inbound_address(settings)
        self._bus_address = settings.address
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, settings.send_high_water_mark)
        self._socket.setsockopt(zmq.SNDTIMEO, milliseconds(settings.send_timeout) or 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        self._socket.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        keep_alive(self._socket)
        self._watch = secure_and_watch(self._socket, settings, "inbound side", self._address)
        self._socket.connect(connect_address(self._address))
        self._lock = threading.Lock()

    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        socket = self._socket
        with self._lock:
            try:
                for topic, body in messages:
                    send(socket, topic, SNDMORE)
                    send(socket, body)
            except zmq.ZMQError as error:
                raise _translated(error, self) from error

    def send_one(self, topic: bytes, body: bytes) -> None:
        """``send([(topic, body)])`` for a caller that serializes its calls (the outbox),
        as one frame: ``topic`` must end with the terminator (see the module docstring)."""
        try:
            send(self._socket, topic + body)
        except zmq.ZMQError as error:
            raise _translated(error, self) from error

    def send_probe(self, topic: bytes, body: bytes) -> int:
        """A probe that cannot leave at once (no hub took the connection, such as one
        whose handshake failed) is not sent: the caller's wait keeps its own timeout,
        and looks at the handshake meanwhile, instead of waiting bus.send_timeout."""
        socket = self._socket
        with self._lock:
            try:
                send(socket, topic, SNDMORE | NOBLOCK)
                send(socket, body)  # a message's frames are queued together
            except zmq.Again:
                pass
            except zmq.ZMQError as error:
                raise _translated(error, self) from error
        return 1

    def handshake_failure(self) -> str | None:
        return None if self._watch is None else self._watch.failure()

    def close(self, linger: float) -> None:
        with self._lock:
            if not self._socket.closed:
                unwatch(self._socket, self._watch)
                self._socket.close(linger=milliseconds(linger))


class ZmqReceiver(Receiver):
    def __init__(self, context: zmq.Context, settings: BusSettings) -> None:
        self._socket = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, settings.receive_high_water_mark)
        # Subscriptions travel out of a SUB socket: past a high-water mark libzmq drops
        # them silently, and a subscriber of 10,000 channels would miss some.
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        self._socket.setsockopt(zmq.LINGER, 0)
        keep_alive(self._socket)
        self._watch = secure_and_watch(self._socket, settings, "subscriber side", settings.address)
        self._socket.connect(connect_address(settings.address))
        identity = secrets.token_hex(8).encode()
        self.batch_topic = ROUTE + identity
        self._route_request = ROUTE_REQUEST + identity + b":"
        self._routed = False
        self._interrupted = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        """Bus signals are subscribed to as they are; channels are asked of the hub
        (patterns by their literal start: the subscriber matches the rest)."""
        if prefix[:1] == CONTROL:
            self._socket.setsockopt(zmq.SUBSCRIBE, prefix)
            return
        if not self._routed:  # first: the hub may route as soon as it sees the request
            self._socket.setsockopt(zmq.SUBSCRIBE, self.batch_topic)
            self._routed = True
        self._socket.setsockopt(zmq.SUBSCRIBE, self._route_request + prefix)

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        if prefix[:1] == CONTROL:
            self._socket.setsockopt(zmq.UNSUBSCRIBE, prefix)
        else:  # the SUB socket counts: the hub hears of it when the last one goes
            self._socket.setsockopt(zmq.UNSUBSCRIBE, self._route_request + prefix)

    def receive(self, timeout: float | None) -> Frames | None:
        socket = self._socket
        try:
            if _poll_in(socket, timeout):
                return _receive_frames(socket)
        except zmq.Again:
            return None
        except zmq.ZMQError as error:
            raise _translated(error) from error
        return None

    def receive_more(self) -> Iterator[Frames]:
        """The messages already queued, one by one, without waiting, for as long as the
        caller asks: what a subscriber behind its stream takes in one go (one cheap
        check when nothing is queued)."""
        socket = self._socket
        try:
            if poll([(socket, POLLIN)], 0):
                while True:
                    yield _receive_frames(socket)
        except zmq.ZMQError:  # zmq.Again: all taken; a closed socket shows on the next wait
            return

    async def wait_async(self, timeout: float | None) -> bool:
        socket = self._socket
        if self._interrupted or socket.closed:
            return True
        try:
            if socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return True
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            descriptor = socket.getsockopt(zmq.FD)
            while True:
                woken: asyncio.Future[None] = loop.create_future()
                self._waiter = (loop, woken)
                loop.add_reader(descriptor, _resolve, woken)
                try:
                    # ZeroMQ's descriptor is edge-triggered: look again once we listen.
                    if self._interrupted or socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        return True
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        return False
                    try:
                        await asyncio.wait_for(woken, remaining)
                    except asyncio.TimeoutError:
                        return bool(socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)
                finally:
                    self._waiter = None
                    loop.remove_reader(descriptor)
                if self._interrupted or socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    return True
        except zmq.ZMQError as error:
            raise _translated(error) from error

    def interrupt(self) -> None:
        # From another thread: only the event loop's own thread touches the socket.
        self._interrupted = True
        waiter = self._waiter
        if waiter is not None:
            loop, woken = waiter
            with contextlib.suppress(RuntimeError):  # that loop is closed: no one waits there
                loop.call_soon_threadsafe(_resolve, woken)

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def handshake_failure(self) -> str | None:
        return None if self._watch is None else self._watch.failure()

    def close(self) -> None:
        if not self._socket.closed:
            unwatch(self._socket, self._watch)
            self._socket.close(linger=0)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _translated(error: zmq.ZMQError, sender: ZmqSender | None = None) -> errors.ShellbotError:
    """The bus's error for a ZeroMQ one, raised ``from`` it: of ``sender``'s sending, or
    else of a receiver's receiving."""
    if sender is not None:
        refused = sender.handshake_failure()  # a secured hub that refuses us takes nothing
        if refused is not None:
            return errors.AuthenticationError(refused)
        if isinstance(error, zmq.Again):
            return errors.TimeoutError(
                f"No hub took messages at {sender._address}, the inbound side of "
                f"{sender._bus_address}, before bus.send_timeout: start a publisher or "
                f"`shellbot-bus hub` on {sender._bus_address}"
            )
        return errors.TransportError(
            f"Sending to {sender._address} failed ({error}): check bus.address and bus.inbound"
        )
    if error.errno == zmq.ENOTSOCK:
        return errors.ClosedError("The subscriber was closed; subscribe again to go on")
    return errors.TransportError(
        f"Receiving failed ({error}): close this subscriber and subscribe again"
    )
