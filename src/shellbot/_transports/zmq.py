"""``tcp://``, ``ipc://`` and ``inproc://``: the embedded ZeroMQ transport.

The hub binds two sockets:

- an XPUB socket at ``bus.address``, where subscribers connect SUB sockets;
- a PULL socket at the inbound address, where every process connects one PUSH
  socket to publish. The inbound address is ``bus.inbound`` when set, else
  derived from ``bus.address``: TCP port + 1 (``tcp://127.0.0.1:5556`` for the
  default), or the same path or name with ``.in`` appended for ``ipc://`` and
  ``inproc://``.

A PUSH socket may connect before any hub exists: what it sends waits in the
socket (up to ``bus.send_high_water_mark`` messages) until a hub binds. The hub
checks the shape of each message (two frames, a topic that ends with the
terminator or is a control topic, a body with a header, a size within
``bus.max_message_size``), counts and drops the rest, and forwards the bytes
as they are; it never decodes JSON.

On the inbound side only, a message may also come as one frame: the topic and
the body back to back (the topic's terminator, the first 0xFF byte, ends it).
Our publishers send messages that way, one frame being cheaper than two at
both ends; bus signals and other programs use the two frames. Subscribers
always receive the two frames. Under a backlog the hub joins runs of messages
(see ``ZmqHub._forward_available``); it never waits to do so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _BackendSocket

from .. import errors
from .._codec import BATCH_SEPARATOR, CONTROL_BYTE, HEADER, HEADER_SIZE, TERMINATOR
from .._settings import BusSettings
from .base import Frames, Hub, Receiver, Sender, Transport

RECONNECT_INTERVAL_MS = 20  # a subscriber finds a (re)started hub within this much
# A hub that has just bound the subscriber side waits for connected subscribers to
# (re)send their subscriptions before it takes in messages, so messages put before it
# started reach subscribers that were already waiting. It waits until subscriptions
# have been quiet for WARM_UP_QUIET, at least WARM_UP_MIN and at most WARM_UP_MAX.
WARM_UP_MIN = 0.1
WARM_UP_QUIET = 0.05
WARM_UP_MAX = 0.5
DRAIN_QUIET_MS = 50  # a stopping hub closes once nothing arrived for this long
FORWARD_BURST = 1024  # messages forwarded before the hub looks at its other sockets
# Under a backlog the hub joins consecutive messages of one sender on one channel into
# one frame of at most this many bytes (or bus.max_message_size when smaller). It only
# joins what has already arrived: a message alone leaves at once, as it came.
BATCH_BYTES = 8 * 1024
# The hub's high-water mark towards each subscriber counts frames, and a frame may
# hold a run of BATCH_BYTES: the hub keeps at most about this many bytes for a
# subscriber that stopped reading (its socket full too), then drops for it alone;
# the subscriber counts the gap at its next message.
HUB_BYTES_PER_SUBSCRIBER = 64 * 1024 * 1024

# The hot path calls the backend's methods: the sugar layer above them costs more per
# call than sending a small frame (routing_id/group handling, RCVMORE through enums).
_send = _BackendSocket.send
_recv = _BackendSocket.recv
_get = _BackendSocket.get
_EVENTS = zmq.EVENTS
_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
_POLLIN = zmq.POLLIN
_unpack_header = HEADER.unpack_from


def _receive_frames(socket: zmq.Socket) -> Frames:
    """The frames of the next message (``zmq.Again`` when none waits)."""
    first = _recv(socket, _NOBLOCK, False)
    if not first.more:
        return [first.bytes]
    second = _recv(socket, _NOBLOCK, False)
    if not second.more:
        return [first.bytes, second.bytes]
    frames = [first.bytes, second.bytes]
    more = True
    while more:
        frame = _recv(socket, _NOBLOCK, False)
        frames.append(frame.bytes)
        more = frame.more
    return frames


def _poll_in(socket: zmq.Socket, timeout: float | None) -> bool:
    """Waits at most ``timeout`` seconds (None: forever) for ``socket`` to be readable."""
    milliseconds = _milliseconds(timeout)
    return bool(zmq.zmq_poll([(socket, _POLLIN)], -1 if milliseconds is None else milliseconds))


def inbound_address(settings: BusSettings) -> str:
    """Where publishers connect: ``bus.inbound``, or the rule in the module docstring."""
    if settings.inbound:
        return settings.inbound
    scheme, rest = settings.address.split("://", 1)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        return f"tcp://{host}:{int(port) + 1}"
    return f"{settings.address}.in"


def connect_address(address: str) -> str:
    """The address to connect to: a hub bound on every interface is reached on loopback."""
    scheme, rest = address.split("://", 1)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if host in ("*", "0.0.0.0"):
            return f"tcp://127.0.0.1:{port}"
    return address


def _milliseconds(timeout: float | None) -> int | None:
    return None if timeout is None else max(0, int(timeout * 1000 + 0.999))


class ZmqSender(Sender):
    def __init__(self, context: zmq.Context, settings: BusSettings) -> None:
        self._address = inbound_address(settings)
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, settings.send_high_water_mark)
        self._socket.setsockopt(zmq.SNDTIMEO, _milliseconds(settings.send_timeout) or 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        self._socket.connect(connect_address(self._address))
        self._lock = threading.Lock()

    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        socket = self._socket
        with self._lock:
            try:
                for topic, body in messages:
                    _send(socket, topic, _SNDMORE)
                    _send(socket, body)
            except zmq.ZMQError as error:
                raise self._translated(error) from None

    def send_one(self, topic: bytes, body: bytes) -> None:
        """``send([(topic, body)])`` for a caller that serializes its calls (the outbox),
        as one frame: ``topic`` must end with the terminator (see the module docstring)."""
        try:
            _send(self._socket, topic + body)
        except zmq.ZMQError as error:
            raise self._translated(error) from None

    def _translated(self, error: zmq.ZMQError) -> errors.ShellbotError:
        if isinstance(error, zmq.Again):
            return errors.TimeoutError(
                f"No hub took messages at {self._address} before bus.send_timeout: "
                "start a publisher or `shellbot-bus hub` on this address"
            )
        return errors.TransportError(
            f"Sending to {self._address} failed ({error}): check bus.address and bus.inbound"
        )

    def close(self, linger: float) -> None:
        with self._lock:
            if not self._socket.closed:
                self._socket.close(linger=_milliseconds(linger))


class ZmqReceiver(Receiver):
    def __init__(self, context: zmq.Context, settings: BusSettings) -> None:
        self._socket = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, settings.receive_high_water_mark)
        # Subscriptions travel out of a SUB socket: past a high-water mark libzmq drops
        # them silently, and a subscriber of 10,000 channels would miss some.
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(connect_address(settings.address))
        self._interrupted = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def subscribe(self, prefix: bytes) -> None:
        self._socket.setsockopt(zmq.SUBSCRIBE, prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        self._socket.setsockopt(zmq.UNSUBSCRIBE, prefix)

    def receive(self, timeout: float | None) -> Frames | None:
        socket = self._socket
        try:
            return _receive_frames(socket)
        except zmq.Again:
            if timeout == 0:
                return None
        except zmq.ZMQError as error:
            raise _translated(error) from error
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
            if int(_get(socket, _EVENTS)) & _POLLIN:
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

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.close(linger=0)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _translated(error: zmq.ZMQError) -> errors.ShellbotError:
    if error.errno == zmq.ENOTSOCK:
        return errors.ClosedError("The subscriber was closed; subscribe again to go on")
    return errors.TransportError(
        f"Receiving failed ({error}): close this subscriber and subscribe again"
    )


class ZmqHub(Hub):
    """Forwards from the PULL socket to the XPUB socket, in a thread of its own."""

    def __init__(
        self,
        context: zmq.Context,
        settings: BusSettings,
        subscriber_side: zmq.Socket,
        publisher_side: zmq.Socket,
        lock_file: int | None,
    ) -> None:
        self._settings = settings
        self._xpub = subscriber_side
        self._pull = publisher_side
        self._lock_file = lock_file
        self._max_body = HEADER_SIZE + settings.max_message_size
        self._counters = {"forwarded": 0, "dropped": 0, "oversized": 0, "subscriptions": 0}
        wake_address = f"inproc://shellbot-hub-wake-{id(self)}"
        self._wake_in = context.socket(zmq.PAIR)
        self._wake_in.bind(wake_address)
        self._wake_out = context.socket(zmq.PAIR)
        self._wake_out.connect(wake_address)
        self._drain = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="shellbot-hub", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, int]:
        return dict(self._counters)

    def close(self, drain: float) -> None:
        if self._closed:
            return
        self._closed = True
        self._drain = drain
        self._wake_out.send(b"")
        self._thread.join()
        self._wake_out.close(linger=0)

    def _run(self) -> None:
        try:
            items = [(self._pull, _POLLIN), (self._xpub, _POLLIN), (self._wake_in, _POLLIN)]
            pull, xpub, wake = self._pull, self._xpub, self._wake_in
            while True:
                ready = [socket for socket, _ in zmq.zmq_poll(items, -1)]
                if xpub in ready:
                    self._take_subscriptions()
                if pull in ready:
                    self._forward_available()
                if wake in ready:
                    break
            self._drain_then_close()
        finally:
            for socket in (self._pull, self._wake_in):
                socket.close(linger=0)
            self._xpub.close(linger=_milliseconds(min(self._settings.linger, 1.0)))
            if self._lock_file is not None:
                os.close(self._lock_file)

    def _take_subscriptions(self) -> None:
        with contextlib.suppress(zmq.Again):
            while True:
                event = self._xpub.recv(zmq.NOBLOCK)
                if event[:1] == b"\x01":
                    self._counters["subscriptions"] += 1

    def _forward_available(self) -> None:
        """Forwards what has arrived, checked; joins runs of one sender on one channel.

        A run is messages of one sender, one after the other in that sender's
        order, on one topic, with consecutive sequence numbers: they leave as one
        body (the first header, then the JSON texts joined by newlines), which the
        subscriber splits again. Each sender has its own run, so senders whose
        messages arrive interleaved (fan-in) are joined too; order is kept per
        sender, which is all the bus promises (arrival order across senders is
        ZeroMQ's fair queuing anyway). Nothing waits for a run to grow: the hub
        takes only what is already queued, and sends every run before it waits.
        """
        pull, xpub = self._pull, self._xpub
        max_body, limit = self._max_body, self._batch_limit
        forwarded = dropped = oversized = 0
        # sender -> [topic, parts, next sequence, size]: the run being joined
        runs: dict[int, list[Any]] = {}
        try:
            for index in range(FORWARD_BURST):
                # A message that came alone leaves at once: one cheap look for a second
                # one, rather than the exception of an empty receive (a few µs of latency).
                if index == 1 and not int(_get(pull, _EVENTS)) & _POLLIN:
                    break
                first = _recv(pull, _NOBLOCK, False)
                if first.more:
                    second = _recv(pull, _NOBLOCK, False)
                    if second.more:
                        _discard_rest(pull)
                        dropped += 1
                        continue
                    head = first.bytes
                    body = second.bytes
                else:  # one frame: a data topic, its terminator, then the body
                    data = first.bytes
                    end = data.find(TERMINATOR) + 1
                    if end <= 1:  # no terminator, or a bus signal, which takes two frames
                        dropped += 1
                        continue
                    head = data[:end]
                    body = data[end:]
                length = len(body)
                if (
                    not head
                    or (head[-1] != CONTROL_BYTE and head[0] != CONTROL_BYTE)
                    or length < HEADER_SIZE
                ):
                    dropped += 1
                    continue
                if length > max_body:
                    oversized += 1
                    continue
                forwarded += 1
                identity, sequence = _unpack_header(body)
                run = runs.get(identity)
                if head[0] == CONTROL_BYTE:  # a bus signal leaves alone, after its sender's run
                    if run is not None:
                        del runs[identity]
                        _emit(xpub, run[0], run[1])
                    _send(xpub, head, _SNDMORE)
                    _send(xpub, body)
                    continue
                if run is not None:
                    if sequence == run[2] and head == run[0] and run[3] + length <= limit:
                        run[1].append(body[HEADER_SIZE:])
                        run[2] = sequence + 1
                        run[3] += length - HEADER_SIZE + 1
                        continue
                    _emit(xpub, run[0], run[1])
                runs[identity] = [head, [body], sequence + 1, length]
        except zmq.Again:
            pass
        finally:
            for run in runs.values():
                _emit(xpub, run[0], run[1])
            counters = self._counters
            counters["forwarded"] += forwarded
            counters["dropped"] += dropped
            counters["oversized"] += oversized

    @property
    def _batch_limit(self) -> int:
        return HEADER_SIZE + min(BATCH_BYTES, self._settings.max_message_size)

    def _drain_then_close(self) -> None:
        """Forwards what still arrives, until quiet or ``drain`` seconds have passed."""
        deadline = time.monotonic() + self._drain
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pull.poll(min(DRAIN_QUIET_MS, int(remaining * 1000))):
                return
            self._forward_available()


def _emit(xpub: zmq.Socket, topic: bytes, parts: list[bytes]) -> None:
    _send(xpub, topic, _SNDMORE)
    _send(xpub, parts[0] if len(parts) == 1 else BATCH_SEPARATOR.join(parts))


def _discard_rest(socket: zmq.Socket) -> None:
    """Takes the remaining frames of a message of the wrong shape."""
    more = True
    while more:
        more = _recv(socket, _NOBLOCK, False).more


class ZmqTransport(Transport):
    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.process_local = settings.scheme == "inproc"
        self._context: zmq.Context = zmq.Context.instance()

    def open_sender(self) -> Sender:
        return ZmqSender(self._context, self.settings)

    def open_receiver(self) -> Receiver:
        return ZmqReceiver(self._context, self.settings)

    def open_hub(self) -> Hub | None:
        settings = self.settings
        lock_file = None
        if settings.scheme == "ipc":
            # Binding an ipc path replaces whoever held it; a lock file says a hub lives.
            lock_file = _lock_or_none(settings.address.split("://", 1)[1] + ".lock")
            if lock_file is None:
                return None
        xpub = self._context.socket(zmq.XPUB)
        xpub.setsockopt(zmq.SNDHWM, _hub_high_water_mark(settings))
        xpub.setsockopt(zmq.RCVHWM, 0)  # subscriptions arrive here; none may be dropped
        try:
            xpub.bind(settings.address)
        except zmq.ZMQError as error:
            xpub.close(linger=0)
            if lock_file is not None:
                os.close(lock_file)
            if error.errno in (zmq.EADDRINUSE, zmq.EADDRNOTAVAIL):
                return None  # a hub holds it, here or on the machine that owns the address
            raise errors.TransportError(
                f"Cannot bind bus.address {settings.address} ({error}): use an address "
                "this machine can bind (an ipc:// path short, in a directory that exists)"
            ) from error
        _warm_up(xpub)
        pull = self._context.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, settings.send_high_water_mark)
        # Far larger frames cost memory before the hub can refuse them: libzmq drops the
        # peer instead. Frames between the two limits are received, counted and dropped.
        pull.setsockopt(zmq.MAXMSGSIZE, 4 * settings.max_message_size + 65536)
        inbound = inbound_address(settings)
        try:
            pull.bind(inbound)
        except zmq.ZMQError as error:
            pull.close(linger=0)
            xpub.close(linger=0)
            if lock_file is not None:
                os.close(lock_file)
            raise errors.AddressInUse(
                f"The hub bound {settings.address} but not its inbound side {inbound} "
                f"({error}); free it, or set bus.inbound to a free address"
            ) from error
        return ZmqHub(self._context, settings, xpub, pull, lock_file)


def _hub_high_water_mark(settings: BusSettings) -> int:
    """Frames the hub holds for one subscriber: ``bus.receive_high_water_mark``, capped
    so that full frames stay within HUB_BYTES_PER_SUBSCRIBER (0 stays 0: no limit)."""
    frames = settings.receive_high_water_mark
    cap = max(
        1000,
        HUB_BYTES_PER_SUBSCRIBER // (HEADER_SIZE + min(BATCH_BYTES, settings.max_message_size)),
    )
    return 0 if frames <= 0 else min(frames, cap)


def _warm_up(xpub: zmq.Socket) -> None:
    """Takes the subscriptions of subscribers already waiting before messages flow."""
    start = last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= WARM_UP_MAX or (
            now - start >= WARM_UP_MIN and now - last >= WARM_UP_QUIET
        ):
            return
        if xpub.poll(int(WARM_UP_QUIET * 1000)):
            with contextlib.suppress(zmq.Again):
                while True:
                    xpub.recv(zmq.NOBLOCK)
                    last = time.monotonic()


def _lock_or_none(path: str) -> int | None:
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise errors.TransportError(
            f"Cannot create {path}, which says that a hub holds this ipc:// address "
            f"({error.strerror}): use a bus.address in a directory that exists and "
            "that this user may write to"
        ) from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor
