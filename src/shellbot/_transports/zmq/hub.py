"""The hub of the embedded ZeroMQ transport: it binds both sides (see the package's
docstring), then forwards in a thread of its own, checking each message's shape and
counting what it drops. Who gets what is ``routing``; how messages of one sender are
joined, ``_runs``; a clean stop, ``handover``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from typing import Any

import zmq

from ... import errors
from ..._codec import CONTROL_BYTE, CREDIT, HEADER, HEADER_SIZE, REPLY, TERMINATOR
from ..._settings import BusSettings
from .._runs import Run, run_limit
from ..base import Hub
from .curve import (
    curve_of,
    holding_refused,
    release_hub,
    secure_hub,
    subscriptions_reader,
    watch_inbound,
)
from .handover import InboundConnections, watched
from .requests import inbox_of
from .routing import BATCH_BYTES, Batches, Routes
from .shares import HubShares
from .sockets import (
    NOBLOCK,
    POLLIN,
    RCVMORE,
    SNDMORE,
    get,
    inbound_address,
    keep_alive,
    milliseconds,
    poll,
    recv,
    send,
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
# The hub's high-water mark towards each subscriber counts frames, and a frame may
# hold a batch of BATCH_BYTES: the hub keeps at most about this many bytes for a
# subscriber that stopped reading (its socket full too), then drops for it alone;
# the subscriber counts the gap at its next message.
HUB_BYTES_PER_SUBSCRIBER = 64 * 1024 * 1024
_unpack_header = HEADER.unpack_from


def open_hub(context: zmq.Context, settings: BusSettings) -> ZmqHub | None:
    """A hub bound at ``settings.address`` and its inbound side, or None when another
    hub holds the address (or, with CURVE, when this process may not hold the hub)."""
    curve = curve_of(settings)
    if curve is not None and holding_refused(curve) is not None:
        return None  # without the hub's secret it only connects, never binds
    # Whatever was made is released, in reverse, on every way out but a hub made.
    with contextlib.ExitStack() as made:
        lock_file = None
        if settings.scheme == "ipc":
            # Binding an ipc path replaces whoever held it; a lock file says a hub lives.
            lock_file = _lock_or_none(settings.address.split("://", 1)[1] + ".lock")
            if lock_file is None:
                return None
            made.callback(os.close, lock_file)
        xpub = context.socket(zmq.XPUB)
        made.callback(xpub.close, linger=0)
        pull = context.socket(zmq.PULL)
        made.callback(pull.close, linger=0)
        xpub.setsockopt(zmq.SNDHWM, _hub_high_water_mark(settings))
        xpub.setsockopt(zmq.RCVHWM, 0)  # subscriptions arrive here; none may be dropped
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
            made.callback(release_hub, secured)
        try:
            xpub.bind(settings.address)
        except zmq.ZMQError as error:
            if error.errno in (zmq.EADDRINUSE, zmq.EADDRNOTAVAIL):
                return None  # a hub holds it, here or on the machine that owns the address
            raise errors.TransportError(
                f"Cannot bind bus.address {settings.address} ({error}): use an address "
                "this machine can bind (an ipc:// path short, in a directory that exists)"
            ) from error
        routes = Routes(HubShares(xpub, BATCH_BYTES))
        if secured is not None:
            routes.reader = subscriptions_reader(secured)
        _warm_up(xpub, routes)
        inbound = inbound_address(settings)
        # Watched from before it binds: a clean stop ends every connection (``handover``).
        connections = None
        if watched(settings.scheme):
            connections = InboundConnections(pull, inbound)
            made.callback(connections.close)  # before the socket it watches closes
        if secured is not None:
            watch_inbound(secured, connections)  # a removed key's publishers are cut through it
        try:
            pull.bind(inbound)
        except zmq.ZMQError as error:
            raise errors.AddressInUse(
                f"The hub bound {settings.address} but not its inbound side {inbound} "
                f"({error}); free it, or set bus.inbound to a free address"
            ) from error
        hub = ZmqHub(context, settings, xpub, pull, lock_file, routes, secured, connections)
        made.pop_all()  # the hub's now: it releases them when it closes
        return hub


class ZmqHub(Hub):
    """Forwards from the PULL socket to the XPUB socket, in a thread of its own."""

    def __init__(
        self,
        context: zmq.Context,
        settings: BusSettings,
        subscriber_side: zmq.Socket,
        publisher_side: zmq.Socket,
        lock_file: int | None,
        routes: Routes,
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
        # Run.takes's rule inline: a message of ``size`` bytes joins while the run's size
        # plus its own stays within this (its header goes, a separator comes).
        self._run_joins = run_limit(settings.max_message_size) + HEADER_SIZE - 1
        self._batches = Batches(subscriber_side, routes, BATCH_BYTES)
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
            items = [(self._pull, POLLIN), (self._xpub, POLLIN), (self._wake_in, POLLIN)]
            pull, xpub, wake = self._pull, self._xpub, self._wake_in
            connections = self._connections
            if connections is not None:
                items.append((connections.monitor, POLLIN))
            while True:
                ready = [socket for socket, _ in poll(items, -1)]
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
            self._xpub.close(linger=milliseconds(min(self._settings.linger, 1.0)))
            if self._secured is not None:
                release_hub(self._secured)
            if self._lock_file is not None:
                os.close(self._lock_file)

    def _forward_available(self) -> None:
        """Forwards what has arrived, checked; joins runs of one sender on one channel.

        A run (``_runs``) is messages of one sender, one after the other in that
        sender's order, on one topic, with consecutive sequence numbers: they leave
        as one message, which the subscriber splits again. Each sender has its own
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
        pull_items = [(pull, POLLIN)]
        max_body, joins = self._max_body, self._run_joins
        add = self._batches.add
        forwarded = signals = dropped = oversized = 0
        runs: dict[int, Run] = {}  # sender -> the run being joined
        try:
            for index in range(FORWARD_BURST):
                # A message that came alone leaves at once: one cheap look for a second
                # one, rather than the exception of an empty receive (a few µs of latency).
                if index == 1 and not poll(pull_items, 0):
                    break
                data = recv(pull, NOBLOCK, True)
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
                if run is None:
                    runs[identity] = Run(head, data, sequence, size)
                    continue
                # Run.takes and Run.add, inline: a call per message costs throughput.
                if sequence == run.next and head == run.topic and run.size + size <= joins:
                    run.parts.append(data[end + HEADER_SIZE :])
                    run.next = sequence + 1
                    run.size += size - HEADER_SIZE + 1
                    continue
                add(run.topic, run.parts)
                # The sender's next run, in the same object: a new one per message (runs
                # of one, many channels) costs more than the list it replaced (measured).
                run.topic = head
                run.parts = [data]
                run.next = sequence + 1
                run.size = size
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
        if not well_formed or not get(pull, RCVMORE):
            _discard_rest(pull)
            return None
        body = recv(pull, NOBLOCK, True)
        if get(pull, RCVMORE):
            _discard_rest(pull)
            return None
        return topic + body, len(topic)

    def _signal(self, data: bytes, end: int, runs: dict[int, Run]) -> None:
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
        send(self._xpub, data[:end], SNDMORE)
        send(self._xpub, data[end:])

    def _send_runs(self, runs: dict[int, Run]) -> None:
        """Puts every run into its receivers' batches, then sends the batches."""
        for run in runs.values():
            self._batches.add(run.topic, run.parts)
        runs.clear()
        self._batches.flush()

    def _end_connections_then_close(self, connections: InboundConnections) -> None:
        """Ends every publisher's connection and forwards all it sent, then returns: once
        none is left, at the latest after ``drain`` seconds."""
        deadline = time.monotonic() + self._drain
        connections.end_all()
        items = [(self._pull, POLLIN), (connections.monitor, POLLIN)]
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
            if poll(items, int(remaining * 1000) + 1):
                self._forward_available()

    def _drain_then_close(self) -> None:
        """Forwards what still arrives, until quiet or ``drain`` seconds have passed."""
        deadline = time.monotonic() + self._drain
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pull.poll(min(DRAIN_QUIET_MS, int(remaining * 1000))):
                return
            self._forward_available()


def _take_subscriptions(xpub: zmq.Socket, routes: Routes) -> None:
    """Takes every (un)subscription the XPUB socket has handed up so far."""
    if routes.reader is not None:
        routes.reader.take_subscriptions(xpub, routes.take)
        return
    with contextlib.suppress(zmq.Again):
        while True:
            routes.take(xpub.recv(zmq.NOBLOCK))


def _discard_rest(socket: zmq.Socket) -> None:
    """Takes the remaining frames of a message of the wrong shape."""
    while get(socket, RCVMORE):
        recv(socket, NOBLOCK, True)


def _hub_high_water_mark(settings: BusSettings) -> int:
    """Frames the hub holds for one subscriber: ``bus.receive_high_water_mark``, capped
    so that full frames stay within HUB_BYTES_PER_SUBSCRIBER (0 stays 0: no limit)."""
    frames = settings.receive_high_water_mark
    cap = max(1000, HUB_BYTES_PER_SUBSCRIBER // BATCH_BYTES)
    return 0 if frames <= 0 else min(frames, cap)


def _warm_up(xpub: zmq.Socket, routes: Routes) -> None:
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
