"""The ZeroMQ hub's queue groups: members learnt from their requests, shares sent in
batches that say how many messages they hold, credit taken from members.

The split itself (who gets what, who has room, what was lost) is ``_shares``;
this module is its wire on the hub: ``SHARE_REQUEST`` subscriptions that XPUB
hands up (and the unsubscriptions ZeroMQ makes up when a member goes away,
killed or closed: what it had in flight is then counted lost), ``CREDIT``
signals from members, and batches on ``ROUTE`` + member id + ``SHARE_MARK`` +
the count, which ZeroMQ's filter gives to that member alone.
"""

from __future__ import annotations

import zmq

from ..._codec import (
    BATCH_SEPARATOR,
    HEADER,
    HEADER_SIZE,
    RECORD,
    ROUTE,
    SHARE_COUNT,
    SHARE_MARK,
    SHARE_REQUEST,
    TERMINATOR,
)
from .._shares import Assignment, Shares
from .sockets import SNDMORE, send

# A run the hub joined is split into pieces of at most this many messages for a group:
# shares are dealt in pieces, so the finer, the more even (and a run may hold 1,000).
SHARE_PIECE = 64
_pack_record = RECORD.pack
_pack_header = HEADER.pack
_pack_count = SHARE_COUNT.pack
_unpack_header = HEADER.unpack_from
_unpack_record = RECORD.unpack_from


class _Batch:
    __slots__ = ("count", "data")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = bytearray(data)
        self.count = count  # messages in it


class HubShares:
    def __init__(self, xpub: zmq.Socket | None, limit: int) -> None:
        self._xpub = xpub
        self._limit = limit
        self.shares = Shares()
        self._pending: dict[bytes, _Batch] = {}  # member -> what the next flush sends it

    def take(self, topic: bytes, subscribing: bool) -> None:
        """One (un)subscription to a ``SHARE_REQUEST`` topic."""
        member, colon, rest = topic[len(SHARE_REQUEST) :].partition(b":")
        group, terminator, prefix = rest.partition(TERMINATOR)
        if not colon or not member or not group or not terminator:
            return
        shares = self.shares
        if subscribing:
            exact = prefix.endswith(TERMINATOR)
            released = shares.join(member, group, prefix, exact, ROUTE + member)
        else:
            released = shares.leave(member, prefix)
        self._assign(released)

    def add(self, topic: bytes, run: list[bytes], data: bytes) -> bool:
        """Gives a run (its first message whole, then the JSON texts of the others; joined:
        ``data``) to members of each group that wants ``topic``, in pieces of at most
        SHARE_PIECE messages; False when no group does."""
        count = len(run)
        if count <= SHARE_PIECE:
            return self._add(topic, data, count)
        start = len(topic)
        identity, sequence = _unpack_header(run[0], start)
        head, texts = run[0][: start + HEADER_SIZE], [run[0][start + HEADER_SIZE :], *run[1:]]
        for first in range(0, count, SHARE_PIECE):
            if first:
                head = topic + _pack_header(identity, sequence + first)
            piece = head + BATCH_SEPARATOR.join(texts[first : first + SHARE_PIECE])
            if not self._add(topic, piece, min(SHARE_PIECE, count - first)):
                return False
        return True

    def _add(self, topic: bytes, data: bytes, count: int) -> bool:
        record = _pack_record(len(data), len(topic), count) + data
        assigned = self.shares.route(topic, record, count, len(data))
        if assigned is None:
            return False
        self._assign(assigned, count)
        return True

    def credit(self, data: bytes, end: int, prefix_size: int) -> None:
        """A member's ``CREDIT`` signal: its id in the topic, its running total in the body."""
        total = _unpack_header(data, end)[0]
        self._assign(self.shares.credit(data[prefix_size:end], total))

    def _assign(self, assignments: list[Assignment], count: int | None = None) -> None:
        pending = self._pending
        for member, item in assignments:
            messages = count if count is not None else _unpack_record(item)[2]
            batch = pending.get(member.key)
            if batch is None:
                pending[member.key] = _Batch(item, messages)
                continue
            if len(batch.data) + len(item) > self._limit:
                self._send_batch(member.key, batch)
                batch.data, batch.count = bytearray(), 0
            batch.data += item
            batch.count += messages

    def flush(self) -> None:
        """Sends every member its batch: nothing waits for a batch to fill."""
        for member, batch in self._pending.items():
            if batch.count:
                self._send_batch(member, batch)
        self._pending.clear()

    def _send_batch(self, member: bytes, batch: _Batch) -> None:
        topic = ROUTE + member + SHARE_MARK + _pack_count(batch.count)
        assert self._xpub is not None, "routes made without a hub route no shares"
        send(self._xpub, topic, SNDMORE)
        send(self._xpub, batch.data)

    def stats(self) -> dict[str, int]:
        shares = self.shares
        return {
            "group_members": len(shares.members),
            "group_waiting": shares.waiting(),
            "group_lost": shares.lost,
        }
