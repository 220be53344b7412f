"""The hub of the embedded ZeroMQ transport: it binds, learns routes, and forwards.

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

import contextlib
import fcntl
import os
import threading
import time
from typing import Any

import zmq

from .. import errors
from .._codec import (
    BATCH_SEPARATOR,
    CONTROL,
    CONTROL_BYTE,
    CREDIT,
    HEADER,
    HEADER_SIZE,
    RECORD,
    REPLY,
    ROUTE,
    ROUTE_REQUEST,
    SHARE_REQUEST,
    TERMINATOR,
)
from .._settings import BusSettings
from ._zmq_curve import (
    curve_of,
    holding_refused,
    release_hub,
    secure_hub,
    subscriptions_reader,
    watch_inbound,
)
from ._zmq_handover import InboundConnections, watched
from ._zmq_requests import inbox_of, reply_addresses
from ._zmq_shares import HubShares
from .base import Hub
from .zmq import (
    _NOBLOCK,
    _POLLIN,
    _RCVMORE,
    _SNDMORE,
    _get,
    _milliseconds,
    _poll,
    _recv,
    _send,
    inbound_address,
    keep_alive,
)

# A hub that has just bound the subscriber side waits for connected subscribers to
# (re)send their subscriptions before it takes in messages, so messages put before it
# started reach subscribers that were already waiting. It waits until subscriptions
# have been quiet for WARM_UP_QUIET, at least WARM_UP_MIN and at most WARM_UP_MAX.
WARM_UP_MIN = 0.1
WARM_UP_QUIET = 0.05
WARM_UP_MAX = 0.5
DRAIN_QUIET_MS = 50  # inproc://: a stopping hub closes once nothing arrived for this long
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
_unpack_header = HEADER.unpack_from
_pack_record = RECORD.pack
_RECORD_SIZE = RECORD.size


def open_hub(context: zmq.Context, settings: BusSettings) -> ZmqHub | None:
    """A hub bound at ``settings.address`` and its inbound side, or None when another
    hub holds the address (or, with CURVE, when this process may not hold the hub)."""
    curve = curve_of(settings)
    if curve is not None and holding_refused(curve) is not None:
        return None  # without the hub's secret it only connects, never binds
    lock_file = None
    if settings.scheme == "ipc":
        # Binding an ipc path replaces whoever held it; a lock file says a hub lives.
        lock_file = _lock_or_none(settings.address.split("://", 1)[1] + ".lock")
        if lock_file is None:
            return None
    xpub = context.socket(zmq.XPUB)
    xpub.setsockopt(zmq.SNDHWM, _hub_high_water_mark(settings))
    xpub.setsockopt(zmq.RCVHWM, 0)  # subscriptions arrive here; none may be dropped
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, settings.send_high_water_mark)
    keep_alive(xpub)
    keep_alive(pull)
    # Far larger frames cost memory before the hub can refuse them: libzmq drops the
    # peer instead. Frames between the two limits are received, counted and dropped.
    pull.setsockopt(zmq.MAXMSGSIZE, 4 * settings.max_message_size + 65536)
    # Both sides are secured before either binds: no plain peer ever gets in.
    secured = None
    if curve is not None:
        secured = secure_hub(context, [xpub, pull], curve, f"shellbot {settings.address}")
    try:
        xpub.bind(settings.address)
    except zmq.ZMQError as error:
        xpub.close(linger=0)
        pull.close(linger=0)
        if secured is not None:
            release_hub(secured)
        if lock_file is not None:
            os.close(lock_file)
        if error.errno in (zmq.EADDRINUSE, zmq.EADDRNOTAVAIL):
            return None  # a hub holds it, here or on the machine that owns the address
        raise errors.TransportError(
            f"Cannot bind bus.address {settings.address} ({error}): use an address "
            "this machine can bind (an ipc:// path short, in a directory that exists)"
        ) from error
    routes = _Routes(HubShares(xpub, BATCH_BYTES, _send))
    if secured is not None:
        routes.reader = subscriptions_reader(secured)
    _warm_up(xpub, routes)
    inbound = inbound_address(settings)
    # Watched from before it binds: a clean stop ends every connection (_zmq_handover).
    connections = InboundConnections(pull, inbound) if watched(settings.scheme) else None
    if secured is not None:
        watch_inbound(secured, connections)  # a removed key's publishers are cut through it
    try:
        pull.bind(inbound)
    except zmq.ZMQError as error:
        if connections is not None:
            connections.close()
        pull.close(linger=0)
        xpub.close(linger=0)
        if secured is not None:
            release_hub(secured)
        if lock_file is not None:
            os.close(lock_file)
        raise errors.AddressInUse(
            f"The hub bound {settings.address} but not its inbound side {inbound} "
            f"({error}); free it, or set bus.inbound to a free address"
        ) from error
    return ZmqHub(context, settings, xpub, pull, lock_file, routes, secured, connections)


class _Routes:
    """Which receivers want which topics, learnt from the subscriptions the hub sees.

    ZeroMQ's XPUB socket hands up the first subscription to a topic and the last
    unsubscription from it (also when a subscriber goes away). Route requests
    name their receiver, so each one comes up; plain data topics (subscribed to
    by other programs) are counted, to know whether anyone reads plain frames.
    """

    def __init__(self, shares: HubShares | None = None) -> None:
        # Queue groups' members, learnt here too (a hub's sends their shares on its XPUB).
        self.shares = shares or HubShares(None, BATCH_BYTES, _send)
        self.exact: dict[bytes, set[bytes]] = {}  # topic -> batch topics of its receivers
        self.prefixes: dict[bytes, set[bytes]] = {}  # prefix (pattern, '') -> batch topics
        self.plain = 0
        self.inboxes: set[bytes] = set()  # the REPLY prefixes of requesters' inboxes
        self.count = 0  # routes held: (topic or prefix, receiver) pairs
        self.held: dict[bytes, int] = {}  # batch topic -> routes held for that receiver
        # topic -> the batch topics of its receivers; emptied when the routes change
        self.cache: dict[bytes, tuple[bytes, ...]] = {}
        self.reader: Any = None  # with CURVE: reads the subscriptions, noting their keys

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
        elif topic.startswith(SHARE_REQUEST):
            self.shares.take(topic, subscribing)
        elif topic[:1] != CONTROL:
            self.plain = max(0, self.plain + (1 if subscribing else -1))
        elif topic.startswith(REPLY):
            (self.inboxes.add if subscribing else self.inboxes.discard)(topic)

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
        self._shares = routes.shares
        self._members = routes.shares.shares.members  # the same dict for good: any group?
        self.unrouted = 0  # messages no receiver wanted
        self.no_responders = 0  # requests among them, answered at once

    def add(self, topic: bytes, run: list[bytes]) -> None:
        data = run[0] if len(run) == 1 else BATCH_SEPARATOR.join(run)
        if self._routes.plain:  # another program reads plain frames: ZeroMQ filters them
            _send(self._xpub, topic, _SNDMORE)
            _send(self._xpub, data[len(topic) :])
        receivers = self._cache.get(topic)
        if receivers is None:
            receivers = self._routes.receivers_of(topic)
        shared = bool(self._members) and self._shares.add(topic, run, data)
        if not receivers:
            if not self._routes.plain and not shared:  # plain readers may have: ZeroMQ knows
                self.unrouted += len(run)
                for reply_to in reply_addresses(topic, run):  # requests: no one will answer
                    self.no_responders += 1
                    _send(self._xpub, REPLY + reply_to, _SNDMORE)
                    _send(self._xpub, b"")
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
        self._shares.flush()

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
        secured: Any = None,
        connections: InboundConnections | None = None,
    ) -> None:
        self._secured = secured  # the ZAP handler's share of a CURVE hub, released at the end
        self._settings = settings
        self._xpub = subscriber_side
        self._pull = publisher_side
        self._lock_file = lock_file
        self._max_body = HEADER_SIZE + settings.max_message_size
        self._routes = routes
        self._run_limit = HEADER_SIZE + min(RUN_BYTES, settings.max_message_size)
        self._batches = _Batches(subscriber_side, routes, BATCH_BYTES)
        self._counters = {
            "forwarded": 0,
            "signals": 0,
            "dropped": 0,
            "oversized": 0,
            "replies_dropped": 0,
        }
        wake_address = f"inproc://shellbot-hub-wake-{id(self)}"
        self._wake_in = context.socket(zmq.PAIR)
        self._wake_in.bind(wake_address)
        self._wake_out = context.socket(zmq.PAIR)
        self._wake_out.connect(wake_address)
        self._drain = 0.0
        self._closed = False
        self._connections = connections  # tcp://, ipc://: a clean stop then loses nothing
        self._thread = threading.Thread(target=self._run, name="shellbot-hub", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, int]:
        routes = self._routes
        return {
            **self._counters,
            "unrouted": self._batches.unrouted,
            "no_responders": self._batches.no_responders,
            "subscribers": len(routes.held),
            "routes": routes.count,
            **routes.shares.stats(),
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
            connections = self._connections
            if connections is not None:
                items.append((connections.monitor, _POLLIN))
            while True:
                ready = [socket for socket, _ in _poll(items, -1)]
                if xpub in ready:
                    _take_subscriptions(xpub, self._routes)
                    self._batches.flush()  # what a member that left had waiting goes on
                if pull in ready:
                    self._forward_available()
                if connections is not None and connections.monitor in ready:
                    connections.take_events()
                if wake in ready:
                    break
            if connections is None:
                self._drain_then_close()
            else:
                self._end_connections_then_close(connections)
        finally:
            if self._connections is not None:
                self._connections.close()
            for socket in (self._pull, self._wake_in):
                socket.close(linger=0)
            self._xpub.close(linger=_milliseconds(min(self._settings.linger, 1.0)))
            if self._secured is not None:
                release_hub(self._secured)
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
                    if data.startswith(CREDIT):  # a group member's: for the hub alone
                        self._routes.shares.credit(data, end, len(CREDIT))
                    else:
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
        if data.startswith(REPLY):  # an answer: to an inbox the hub knows, else counted
            inbox = inbox_of(data[:end])
            if inbox not in self._routes.inboxes:
                _take_subscriptions(self._xpub, self._routes)  # it may have just come
                if inbox not in self._routes.inboxes:
                    self._counters["replies_dropped"] += 1  # its requester is gone
                    return
        else:
            _take_subscriptions(self._xpub, self._routes)
        _send(self._xpub, data[:end], _SNDMORE)
        _send(self._xpub, data[end:])

    def _send_runs(self, runs: dict[int, list[Any]]) -> None:
        """Puts every run into its receivers' batches, then sends the batches."""
        for run in runs.values():
            self._batches.add(run[0], run[1])
        runs.clear()
        self._batches.flush()

    def _end_connections_then_close(self, connections: InboundConnections) -> None:
        """Ends every publisher's connection and forwards all it sent, then returns: once
        none is left, at the latest after ``drain`` seconds."""
        deadline = time.monotonic() + self._drain
        connections.end_all()
        items = [(self._pull, _POLLIN), (connections.monitor, _POLLIN)]
        while True:
            connections.take_events()
            if not connections.open:
                while self._pull.poll(0):  # what the last ones sent, queued already
                    self._forward_available()
                connections.take_events()  # one accepted meanwhile is waited for too
                if not connections.open:
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # what is still on its way is lost: publishers count it missed
                return
            if _poll(items, int(remaining * 1000) + 1):
                self._forward_available()

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
    if routes.reader is not None:
        routes.reader.take_subscriptions(xpub, routes.take)
        return
    with contextlib.suppress(zmq.Again):
        while True:
            routes.take(xpub.recv(zmq.NOBLOCK))


def _discard_rest(socket: zmq.Socket) -> None:
    """Takes the remaining frames of a message of the wrong shape."""
    while _get(socket, _RCVMORE):
        _recv(socket, _NOBLOCK, True)


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
