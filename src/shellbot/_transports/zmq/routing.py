"""The hub's routing: which receivers want which topics, and the batches it sends each.

Towards subscribers the hub routes. ZeroMQ filters each frame by its topic, so
a frame holding messages of several channels could only go to everyone; the
hub instead learns who wants what, and batches per receiver. A receiver
subscribes (a ZeroMQ subscription, which the XPUB socket hands to the hub) to
``ROUTE_REQUEST`` + its id + ``:`` + a topic prefix for each of its channels or
patterns, and to ``ROUTE`` + its id, the topic of the batches the hub sends it
(see ``_codec``). ZeroMQ's own filter then delivers each batch to its receiver
alone. Other programs may still subscribe to plain topics: while any do, the
hub also forwards each message as two frames on its own topic.

No loop and no waiting here: the hub's loop (``hub``) hands in subscriptions and
runs, and ``Batches`` sends on the XPUB socket it is given when flushed.
"""

from __future__ import annotations

from typing import Any

import zmq

from ..._codec import (
    BATCH_SEPARATOR,
    CONTROL,
    RECORD,
    REPLY,
    ROUTE,
    ROUTE_REQUEST,
    SHARE_REQUEST,
    TERMINATOR,
)
from .requests import reply_addresses
from .shares import HubShares
from .sockets import SNDMORE, send

# The messages for one receiver go into batches of about BATCH_BYTES.
BATCH_BYTES = 32 * 1024
ROUTE_CACHE_LIMIT = 100_000  # topics whose receivers the hub remembers between changes
_pack_record = RECORD.pack
_RECORD_SIZE = RECORD.size


class Routes:
    """Which receivers want which topics, learnt from the subscriptions the hub sees.

    ZeroMQ's XPUB socket hands up the first subscription to a topic and the last
    unsubscription from it (also when a subscriber goes away). Route requests
    name their receiver, so each one comes up; plain data topics (subscribed to
    by other programs) are counted, to know whether anyone reads plain frames.
    """

    def __init__(self, shares: HubShares | None = None) -> None:
        # Queue groups' members, learnt here too (a hub's sends their shares on its XPUB).
        self.shares = shares or HubShares(None, BATCH_BYTES)
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


class Batches:
    """Messages on their way to each receiver, sent as batches of about ``limit`` bytes.

    A run of messages comes as the first one in the one-frame form (topic,
    terminator, body), then the JSON texts of the others; in a batch it is a
    record: ``_codec.RECORD`` (the lengths of the frame and of the topic, and how
    many messages it holds), then the frame, with the texts joined by newlines.
    """

    def __init__(self, xpub: zmq.Socket, routes: Routes, limit: int) -> None:
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
            send(self._xpub, topic, SNDMORE)
            send(self._xpub, data[len(topic) :])
        receivers = self._cache.get(topic)
        if receivers is None:
            receivers = self._routes.receivers_of(topic)
        shared = bool(self._members) and self._shares.add(topic, run, data)
        if not receivers:
            if not self._routes.plain and not shared:  # plain readers may have: ZeroMQ knows
                self.unrouted += len(run)
                for reply_to in reply_addresses(topic, run):  # requests: no one will answer
                    self.no_responders += 1
                    send(self._xpub, REPLY + reply_to, SNDMORE)
                    send(self._xpub, b"")
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
        send(self._xpub, batch_topic, SNDMORE)
        send(self._xpub, batch)
