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

Towards subscribers the hub routes. ZeroMQ filters each frame by its topic, so
a frame holding messages of several channels could only go to everyone; the
hub instead learns who wants what, and batches per receiver. A receiver
subscribes (a ZeroMQ subscription, which the XPUB socket hands to the hub) to
``ROUTE_REQUEST`` + its id + ``:`` + a topic prefix for each of its channels or
patterns, and to ``ROUTE`` + its id, the topic of the batches the hub sends it
(see ``_codec``). ZeroMQ's own filter then delivers each batch to its receiver
alone. Other programs may still subscribe to plain topics: while any do, the
hub also forwards each message as two frames on its own topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import socket as net
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _BackendSocket

from .. import errors
from .._codec import (
    BATCH_SEPARATOR,
    CONTROL,
    CONTROL_BYTE,
    HEADER,
    HEADER_SIZE,
    RECORD,
    ROUTE,
    ROUTE_REQUEST,
    TERMINATOR,
)
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
# one body of at most RUN_BYTES (or bus.max_message_size when smaller), and the
# messages for one receiver into batches of about BATCH_BYTES. It only joins what has
# already arrived: a message alone leaves at once.
RUN_BYTES = 8 * 1024
BATCH_BYTES = 32 * 1024
ROUTE_CACHE_LIMIT = 100_000  # topics whose receivers the hub remembers between changes
# The hub's high-water mark towards each subscriber counts frames, and a frame may
# hold a batch of BATCH_BYTES: the hub keeps at most about this many bytes for a
# subscriber that stopped reading (its socket full too), then drops for it alone;
# the subscriber counts the gap at its next message.
HUB_BYTES_PER_SUBSCRIBER = 64 * 1024 * 1024
# What a ZeroMQ peer sends first (ZMTP 3: 0xFF, 8 bytes of padding, 0x7F), and how long
# the holder of a taken tcp:// address has to send it before it is taken for another program.
ZMTP_SIGNATURE = b"\xff" + bytes(8) + b"\x7f"
GREETING_TIMEOUT = 1.0

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
_unpack_header = HEADER.unpack_from
_pack_record = RECORD.pack
_RECORD_SIZE = RECORD.size


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
                f"No hub took messages at {self._address}, the inbound side of "
                f"{self._bus_address}, before bus.send_timeout: start a publisher or "
                f"`shellbot-bus hub` on {self._bus_address}"
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


class _Routes:
    """Which receivers want which topics, learnt from the subscriptions the hub sees.

    ZeroMQ's XPUB socket hands up the first subscription to a topic and the last
    unsubscription from it (also when a subscriber goes away). Route requests
    name their receiver, so each one comes up; plain data topics (subscribed to
    by other programs) are counted, to know whether anyone reads plain frames.
    """

    def __init__(self) -> None:
        self.exact: dict[bytes, set[bytes]] = {}  # topic -> batch topics of its receivers
        self.prefixes: dict[bytes, set[bytes]] = {}  # prefix (pattern, '') -> batch topics
        self.plain = 0
        self.count = 0  # routes held: (topic or prefix, receiver) pairs
        self.held: dict[bytes, int] = {}  # batch topic -> routes held for that receiver
        # topic -> the batch topics of its receivers; emptied when the routes change
        self.cache: dict[bytes, tuple[bytes, ...]] = {}

    def take(self, event: bytes) -> None:
        """Takes one (un)subscription: its first byte is 1 or 0, the topic follows."""
        if not event or event[0] > 1:
            return
        subscribing = event[0] == 1
        topic = event[1:]
        if topic.startswith(ROUTE_REQUEST):
            receiver, colon, prefix = topic[len(ROUTE_REQUEST) :].partition(b":")
            if not colon or not receiver:
                return
            batch_topic = ROUTE + receiver
            # A topic ends with the only terminator it holds: such a prefix matches it alone.
            table = self.exact if prefix.endswith(TERMINATOR) else self.prefixes
            receivers = table.setdefault(prefix, set())
            held = self.held
            if subscribing and batch_topic not in receivers:
                receivers.add(batch_topic)
                self.count += 1
                held[batch_topic] = held.get(batch_topic, 0) + 1
            elif not subscribing and batch_topic in receivers:
                receivers.discard(batch_topic)
                self.count -= 1
                held[batch_topic] -= 1
                if not held[batch_topic]:
                    del held[batch_topic]
            if not receivers:
                del table[prefix]
            self.cache.clear()
        elif topic[:1] != CONTROL:
            self.plain = max(0, self.plain + (1 if subscribing else -1))

    def receivers_of(self, topic: bytes) -> tuple[bytes, ...]:
        """The batch topics of the receivers that want ``topic``, worked out from the
        routes and kept in ``cache``, which callers read first."""
        wanting = set(self.exact.get(topic, ()))
        for prefix, receivers in self.prefixes.items():
            if topic.startswith(prefix):
                wanting |= receivers
        if len(self.cache) >= ROUTE_CACHE_LIMIT:
            self.cache.clear()
        found = self.cache[topic] = tuple(wanting)
        return found


class _Batches:
    """Messages on their way to each receiver, sent as batches of about ``limit`` bytes.

    A run of messages comes as the first one in the one-frame form (topic,
    terminator, body), then the JSON texts of the others; in a batch it is a
    record: ``_codec.RECORD`` (the lengths of the frame and of the topic, and how
    many messages it holds), then the frame, with the texts joined by newlines.
    """

    def __init__(self, xpub: zmq.Socket, routes: _Routes, limit: int) -> None:
        self._xpub = xpub
        self._routes = routes
        self._cache = routes.cache  # the same dict for good: routes only ever clear it
        self._limit = limit
        self._pending: dict[bytes, bytearray] = {}  # batch topic -> records not yet sent
        self.unrouted = 0  # messages no receiver wanted

    def add(self, topic: bytes, run: list[bytes]) -> None:
        data = run[0] if len(run) == 1 else BATCH_SEPARATOR.join(run)
        if self._routes.plain:  # another program reads plain frames: ZeroMQ filters them
            _send(self._xpub, topic, _SNDMORE)
            _send(self._xpub, data[len(topic) :])
        receivers = self._cache.get(topic)
        if receivers is None:
            receivers = self._routes.receivers_of(topic)
        if not receivers:
            if not self._routes.plain:  # plain readers may have wanted it: ZeroMQ knows
                self.unrouted += len(run)
            return
        record = _pack_record(len(data), len(topic), len(run))
        room = self._limit - _RECORD_SIZE - len(data)
        pending = self._pending
        for batch_topic in receivers:
            batch = pending.get(batch_topic)
            if batch is None:
                pending[batch_topic] = bytearray(record + data)
                continue
            if len(batch) > room:
                self._send(batch_topic, batch)
                del batch[:]
            batch += record
            batch += data

    def flush(self) -> None:
        """Sends every batch: nothing waits for a batch to fill."""
        for batch_topic, batch in self._pending.items():
            self._send(batch_topic, batch)
        self._pending.clear()

    def _send(self, batch_topic: bytes, batch: bytearray) -> None:
        _send(self._xpub, batch_topic, _SNDMORE)
        _send(self._xpub, batch)


class ZmqHub(Hub):
    """Forwards from the PULL socket to the XPUB socket, in a thread of its own."""

    def __init__(
        self,
        context: zmq.Context,
        settings: BusSettings,
        subscriber_side: zmq.Socket,
        publisher_side: zmq.Socket,
        lock_file: int | None,
        routes: _Routes,
    ) -> None:
        self._settings = settings
        self._xpub = subscriber_side
        self._pull = publisher_side
        self._lock_file = lock_file
        self._max_body = HEADER_SIZE + settings.max_message_size
        self._routes = routes
        self._run_limit = HEADER_SIZE + min(RUN_BYTES, settings.max_message_size)
        self._batches = _Batches(subscriber_side, routes, BATCH_BYTES)
        self._counters = {"forwarded": 0, "signals": 0, "dropped": 0, "oversized": 0}
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
        routes = self._routes
        return {
            **self._counters,
            "unrouted": self._batches.unrouted,
            "subscribers": len(routes.held),
            "routes": routes.count,
        }

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
                ready = [socket for socket, _ in _poll(items, -1)]
                if xpub in ready:
                    _take_subscriptions(xpub, self._routes)
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

    def _forward_available(self) -> None:
        """Forwards what has arrived, checked; joins runs of one sender on one channel.

        A run is messages of one sender, one after the other in that sender's
        order, on one topic, with consecutive sequence numbers: they leave as one
        message (the first whole, then the JSON texts of the others, joined by
        newlines), which the subscriber splits again. Each sender has its own
        run, so senders whose messages arrive interleaved (fan-in) are joined
        too; order is kept per sender, which is all the bus promises (arrival
        order across senders is ZeroMQ's fair queuing anyway). Runs then go
        into each receiver's batch. Nothing waits for a run or a batch to grow:
        the hub takes only what is already queued, and sends everything before
        it waits.

        Frames are received as bytes, one at a time: a frame that holds a data
        topic and a body is a message (our publishers' one-frame form); any
        other frame must begin a message of two frames.
        """
        pull = self._pull
        pull_items = [(pull, _POLLIN)]
        max_body, limit = self._max_body, self._run_limit
        add = self._batches.add
        forwarded = signals = dropped = oversized = 0
        # sender -> [topic, parts, next sequence, size]: the run being joined
        runs: dict[int, list[Any]] = {}
        try:
            for index in range(FORWARD_BURST):
                # A message that came alone leaves at once: one cheap look for a second
                # one, rather than the exception of an empty receive (a few µs of latency).
                if index == 1 and not _poll(pull_items, 0):
                    break
                data = _recv(pull, _NOBLOCK, True)
                end = data.find(TERMINATOR) + 1
                size = len(data) - end  # of the body
                if end <= 1 or size <= 0:  # not the one-frame form: a topic frame, or bad
                    message = self._two_frames(data)
                    if message is None:
                        dropped += 1
                        continue
                    data, end = message
                    size = len(data) - end
                if size < HEADER_SIZE:
                    dropped += 1
                    continue
                if size > max_body:
                    oversized += 1
                    continue
                if data[0] == CONTROL_BYTE:
                    signals += 1
                    self._signal(data, end, runs)
                    continue
                forwarded += 1
                head = data[:end]
                identity, sequence = _unpack_header(data, end)
                run = runs.get(identity)
                if run is not None:
                    if sequence == run[2] and head == run[0] and run[3] + size <= limit:
                        run[1].append(data[end + HEADER_SIZE :])
                        run[2] = sequence + 1
                        run[3] += size - HEADER_SIZE + 1
                        continue
                    add(run[0], run[1])
                runs[identity] = [head, [data], sequence + 1, size]
        except zmq.Again:
            pass
        finally:
            self._send_runs(runs)
            counters = self._counters
            counters["forwarded"] += forwarded
            counters["signals"] += signals
            counters["dropped"] += dropped
            counters["oversized"] += oversized

    def _two_frames(self, topic: bytes) -> tuple[bytes, int] | None:
        """The message that ``topic`` begins, in the one-frame form with the topic's
        length, when it is a topic frame followed by exactly one body frame; else
        None, with the rest of the message taken."""
        pull = self._pull
        # A data topic holds one terminator, at its end; a bus signal starts with it.
        well_formed = bool(topic) and (
            topic[0] == CONTROL_BYTE or topic.find(TERMINATOR) == len(topic) - 1
        )
        if not well_formed or not _get(pull, _RCVMORE):
            _discard_rest(pull)
            return None
        body = _recv(pull, _NOBLOCK, True)
        if _get(pull, _RCVMORE):
            _discard_rest(pull)
            return None
        return topic + body, len(topic)

    def _signal(self, data: bytes, end: int, runs: dict[int, list[Any]]) -> None:
        """Sends a bus signal, after everything that came before it, and once the hub
        knows the routes requested before its subscription: a probe's echo tells the
        subscriber that its channels reach it."""
        self._send_runs(runs)
        _take_subscriptions(self._xpub, self._routes)
        _send(self._xpub, data[:end], _SNDMORE)
        _send(self._xpub, data[end:])

    def _send_runs(self, runs: dict[int, list[Any]]) -> None:
        """Puts every run into its receivers' batches, then sends the batches."""
        for run in runs.values():
            self._batches.add(run[0], run[1])
        runs.clear()
        self._batches.flush()

    def _drain_then_close(self) -> None:
        """Forwards what still arrives, until quiet or ``drain`` seconds have passed."""
        deadline = time.monotonic() + self._drain
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pull.poll(min(DRAIN_QUIET_MS, int(remaining * 1000))):
                return
            self._forward_available()


def _take_subscriptions(xpub: zmq.Socket, routes: _Routes) -> None:
    """Takes every (un)subscription the XPUB socket has handed up so far."""
    with contextlib.suppress(zmq.Again):
        while True:
            routes.take(xpub.recv(zmq.NOBLOCK))


def _discard_rest(socket: zmq.Socket) -> None:
    """Takes the remaining frames of a message of the wrong shape."""
    while _get(socket, _RCVMORE):
        _recv(socket, _NOBLOCK, True)


class ZmqTransport(Transport):
    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.process_local = settings.scheme == "inproc"
        self._context: zmq.Context = zmq.Context.instance()

    def open_sender(self) -> Sender:
        return ZmqSender(self._context, self.settings)

    def open_receiver(self) -> Receiver:
        return ZmqReceiver(self._context, self.settings)

    def unreachable(self) -> str:
        settings = self.settings
        return (
            f"No hub answered at {settings.address} within {settings.start_timeout:g} s "
            f"(bus.start_timeout): the publisher could not hold the hub there, and its "
            f"probe, sent to the hub's inbound side {inbound_address(settings)}, never came "
            f"back through {settings.address}; check bus.address and bus.inbound, or start "
            "`shellbot-bus hub` there"
        )

    def not_a_hub(self) -> str | None:
        """On tcp://: a holder that does not greet as ZeroMQ does is another program."""
        if self.settings.scheme != "tcp":
            return None
        host, _, port = connect_address(self.settings.address).split("://", 1)[1].rpartition(":")
        if _greets_as_zeromq(host.strip("[]"), int(port)) is not False:
            return None
        return (
            f"{self.settings.address} is held by another program, not a hub: it does not "
            "answer as ZeroMQ does; stop that program, or use another port"
        )

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
        routes = _Routes()
        _warm_up(xpub, routes)
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
        return ZmqHub(self._context, settings, xpub, pull, lock_file, routes)


def _greets_as_zeromq(host: str, port: int) -> bool | None:
    """True when what listens at ``host:port`` greets as ZeroMQ does, False when it does
    not within GREETING_TIMEOUT, None when nothing listens there (any more)."""
    received = b""
    try:
        with net.create_connection((host, port), GREETING_TIMEOUT) as peer:
            peer.sendall(ZMTP_SIGNATURE)
            while len(received) < len(ZMTP_SIGNATURE):
                chunk = peer.recv(len(ZMTP_SIGNATURE) - len(received))
                if not chunk:
                    break
                received += chunk
    except ConnectionRefusedError:
        return None
    except OSError:  # a timeout, a reset: not a ZeroMQ peer
        pass
    return len(received) == len(ZMTP_SIGNATURE) and received[0] == 0xFF and received[9] & 1 == 1


def _hub_high_water_mark(settings: BusSettings) -> int:
    """Frames the hub holds for one subscriber: ``bus.receive_high_water_mark``, capped
    so that full frames stay within HUB_BYTES_PER_SUBSCRIBER (0 stays 0: no limit)."""
    frames = settings.receive_high_water_mark
    cap = max(1000, HUB_BYTES_PER_SUBSCRIBER // BATCH_BYTES)
    return 0 if frames <= 0 else min(frames, cap)


def _warm_up(xpub: zmq.Socket, routes: _Routes) -> None:
    """Takes the subscriptions of subscribers already waiting before messages flow."""
    start = last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= WARM_UP_MAX or (
            now - start >= WARM_UP_MIN and now - last >= WARM_UP_QUIET
        ):
            return
        if xpub.poll(int(WARM_UP_QUIET * 1000)):
            _take_subscriptions(xpub, routes)
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
