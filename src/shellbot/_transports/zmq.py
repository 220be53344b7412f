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
both ends; bus signals and other programs use the two frames. Under a backlog
the hub joins runs of messages (see ``ZmqHub._forward_available``); it never
waits to do so.

The hub itself (binding, routing per receiver, batches) is in ``_zmq_hub``; this
module holds the senders, the receivers and the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator, Sequence

import zmq
from zmq.backend import Socket as _BackendSocket

from .. import errors
from .._codec import CONTROL, ROUTE, ROUTE_REQUEST
from .._settings import BusSettings
from . import _zmtp
from ._zmq_curve import HandshakeWatch, curve_of, holding_refused, secure_client
from ._zmq_takeover import StoppedHolder
from .base import Frames, Hub, Receiver, Sender, Transport

RECONNECT_INTERVAL_MS = 20  # a subscriber finds a (re)started hub within this much
# A hub that stops cleanly drops new connections' SYNs (see _zmq_handover): a sender's
# connection attempt that meets it starts again after this, rather than at the kernel's
# SYN retries (1 s, 3 s, 7 s...), and so reaches the next hub.
CONNECT_TIMEOUT_MS = 1000
# Heartbeats on every connection (ZMTP PING/PONG, answered by libzmq's own threads): a
# peer silent for HEARTBEAT_TIMEOUT_MS after a ping (a stopped process, a machine gone,
# a cut network) is dropped, within IVL + TIMEOUT = 2 s, and reconnected to.
HEARTBEAT_IVL_MS = 500
HEARTBEAT_TIMEOUT_MS = 1500
# What a ZeroMQ peer sends first (ZMTP 3: 0xFF, 8 bytes of padding, 0x7F), and how long
# the holder of a taken tcp:// address has to send it before it is taken for another program.

# The hot path calls the backend's methods: the sugar layer above them costs more per
# call than sending a small frame (routing_id/group handling, RCVMORE through enums).
# Whether a message waits is asked with a zero-timeout poll: measured here, it costs
# less than reading ZMQ_EVENTS, and far less than the exception of an empty receive.
_send = _BackendSocket.send
_recv = _BackendSocket.recv
_get = _BackendSocket.get
_poll = zmq.zmq_poll
_RCVMORE = zmq.RCVMORE
_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
_POLLIN = zmq.POLLIN


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


def keep_alive(socket: zmq.Socket) -> None:
    """Heartbeats on every connection of ``socket`` (set before it binds or connects)."""
    socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    socket.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)


def _poll_in(socket: zmq.Socket, timeout: float | None) -> bool:
    """Waits at most ``timeout`` seconds (None: forever) for ``socket`` to be readable."""
    milliseconds = _milliseconds(timeout)
    return bool(_poll([(socket, _POLLIN)], -1 if milliseconds is None else milliseconds))


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
        self._bus_address = settings.address
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, settings.send_high_water_mark)
        self._socket.setsockopt(zmq.SNDTIMEO, _milliseconds(settings.send_timeout) or 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        self._socket.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        keep_alive(self._socket)
        self._watch = _secured(self._socket, settings, "inbound side", self._address)
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
                raise _translated(error, self) from error

    def send_one(self, topic: bytes, body: bytes) -> None:
        """``send([(topic, body)])`` for a caller that serializes its calls (the outbox),
        as one frame: ``topic`` must end with the terminator (see the module docstring)."""
        try:
            _send(self._socket, topic + body)
        except zmq.ZMQError as error:
            raise _translated(error, self) from error

    def send_probe(self, topic: bytes, body: bytes) -> int:
        """A probe that cannot leave at once (no hub took the connection, such as one
        whose handshake failed) is not sent: the caller's wait keeps its own timeout,
        and looks at the handshake meanwhile, instead of waiting bus.send_timeout."""
        socket = self._socket
        with self._lock:
            try:
                _send(socket, topic, _SNDMORE | _NOBLOCK)
                _send(socket, body)  # a message's frames are queued together
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
                _unwatch(self._socket, self._watch)
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
        keep_alive(self._socket)
        self._watch = _secured(self._socket, settings, "subscriber side", settings.address)
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
            if _poll([(socket, _POLLIN)], 0):
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
            _unwatch(self._socket, self._watch)
            self._socket.close(linger=0)


def _secured(
    socket: zmq.Socket, settings: BusSettings, side: str, endpoint: str
) -> HandshakeWatch | None:
    """With bus.curve.* set: makes ``socket`` a CURVE client, watched; else leaves it be."""
    curve = curve_of(settings)
    if curve is None:
        return None
    try:
        secure_client(socket, curve)
    except BaseException:
        socket.close(linger=0)
        raise
    return HandshakeWatch(socket, curve, side, endpoint)


def _unwatch(socket: zmq.Socket, watch: HandshakeWatch | None) -> None:
    if watch is not None:
        with contextlib.suppress(zmq.ZMQError):
            socket.disable_monitor()
        watch.close()


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


class ZmqTransport(Transport):
    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.process_local = settings.scheme == "inproc"
        self._context: zmq.Context = zmq.Context.instance()
        self._stopped_holder: StoppedHolder | None = None

    def open_sender(self) -> Sender:
        self.check_storage()
        return ZmqSender(self._context, self.settings)

    def open_receiver(self, durable: str | None = None, group: str | None = None) -> Receiver:
        self.check_storage(durable)
        if group is not None:
            from ._zmq_member import ZmqMemberReceiver  # which imports this module

            return ZmqMemberReceiver(self._context, self.settings, group)
        return ZmqReceiver(self._context, self.settings)

    def check(self) -> None:
        curve_of(self.settings)

    def publisher_address(self) -> str:
        return inbound_address(self.settings)

    def hub_refused(self) -> str | None:
        curve = curve_of(self.settings)  # tcp:// only: a ConfigurationError otherwise
        return None if curve is None else holding_refused(curve)

    def unreachable(self) -> str:
        settings = self.settings
        curve = curve_of(settings)
        refused = None if curve is None else holding_refused(curve)
        if refused is not None:
            return (
                f"No hub answered at {settings.address} within {settings.start_timeout:g} s "
                f"(bus.start_timeout), and {refused}: start `shellbot-bus hub` there with "
                "the hub's secret certificate, or a publisher that holds it"
            )
        return (
            f"No hub answered at {settings.address} within {settings.start_timeout:g} s "
            f"(bus.start_timeout): the publisher could not hold the hub there, and its "
            f"probe, sent to the hub's inbound side {inbound_address(settings)}, never came "
            f"back through {settings.address}; check bus.address and bus.inbound, or start "
            "`shellbot-bus hub` there"
        )

    def not_a_hub(self) -> str | None:
        """On tcp://: what holds the address when it is not a hub: another program, the
        inbound side of another bus's hub, or some other ZeroMQ socket. A hub secured with
        CURVE, where this program has no keys, is an ``AuthenticationError`` saying so."""
        if self.settings.scheme != "tcp":
            return None
        address = self.settings.address
        host, _, port = connect_address(address).split("://", 1)[1].rpartition(":")
        kind = _zmtp.socket_type(host.strip("[]"), int(port))
        if kind == _zmtp.SECURED and curve_of(self.settings) is None:
            raise errors.AuthenticationError(
                f"The hub at {address} is secured with CURVE, and this program has no keys: "
                "set bus.curve.server_key (the hub's public NAME.key) and "
                "bus.curve.client_key (this program's NAME.key_secret, whose NAME.key the "
                "hub's bus.curve.authorized folder holds); on the command line, "
                "--curve-server-key and --curve-client-key"
            )
        if kind in (_zmtp.NOTHING, _zmtp.ZEROMQ, _zmtp.SECURED, "XPUB"):  # free, or a hub
            return None
        if kind == _zmtp.SILENT and _zmtp.paused(int(port)):
            return None  # a stopped holder: it goes on, or a publisher takes over from it
        held = _zmtp.holder(int(port))
        if kind in (_zmtp.FOREIGN, _zmtp.SILENT):
            return (
                f"{address} is held by another program{held}, not a hub: it does not "
                "answer as ZeroMQ does; stop that program, or use another port"
            )
        if kind == "PULL":
            return (
                f"{address} is the inbound side of another bus's hub{held}: a bus on port P "
                f"takes P + 1 for its publishers; give this bus a port 2 or more away from "
                "the other's, or set bus.inbound on both"
            )
        if kind == "PUB":
            return (
                f"{address} is held by a ZeroMQ PUB socket{held}, not a hub: the original "
                "shellbot's publisher binds one there; give this bus another address, and "
                "`shellbot-bus bridge --legacy` relays between the two"
            )
        return (
            f"{address} is held by a ZeroMQ {kind} socket{held}, not a hub; stop that "
            "program, or use another port"
        )

    def open_hub(self) -> Hub | None:
        from ._zmq_hub import open_hub  # the hub's module imports this one

        hub = open_hub(self._context, self.settings)
        curve = curve_of(self.settings)
        may_hold = curve is None or holding_refused(curve) is None
        if hub is None and may_hold and self.settings.scheme == "tcp":
            # Held: by a live hub (fine), or by a stopped process that forwards nothing.
            if self._stopped_holder is None:
                self._stopped_holder = StoppedHolder(self.settings, inbound_address(self.settings))
            if self._stopped_holder.remove_if_stopped():
                hub = open_hub(self._context, self.settings)
        return hub
