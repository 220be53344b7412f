"""A subscriber's decoder: what arrives is checked, counted and decoded once, here.

Anyone may reach a hub, so a message of the wrong shape, a channel that is not
UTF-8 or a body that is not JSON is dropped and counted (``dropped``). Sequence
numbers per publishing process and channel reveal what the transport dropped (a
subscriber too far behind, a hub restart): ``missed``.

A message comes in a frame of its own, or as a record of a batch that the hub routed
to this receiver (see ``_codec``); both go through the one loop of ``_take_messages``.
"""

from __future__ import annotations

import secrets
import struct
from collections import deque
from typing import Any

import orjson

from . import _codec
from ._durable import Acknowledgements, Seen
from ._subscriptions import Subscriptions, Topic

# (topic, sender, sequence, message), and for a request its reply address last
Entry = tuple[Any, ...]

_unpack_header = _codec.HEADER.unpack_from
_unpack_record = _codec.RECORD.unpack_from
_RECORD_SIZE = _codec.RECORD_SIZE
_HEADER_SIZE = _codec.HEADER_SIZE
_SEPARATOR = _codec.BATCH_SEPARATOR
_CONTROL = _codec.CONTROL
_REQUEST_MARK = _codec.REQUEST_MARK_BYTE
_loads = orjson.loads
_decode_wide = _codec.decode_wide


class Readiness:
    """A subscriber's current probe, and the senders whose copy of it came back: as
    many copies as ``needed`` prove its subscriptions live (one through a hub, one per
    node of a cluster)."""

    __slots__ = ("echoes", "needed", "probe")

    def __init__(self) -> None:
        self.probe = b""
        self.echoes: set[int] = set()
        self.needed = 1

    def renew(self) -> bytes:
        """A new probe topic, none of whose copies came back yet."""
        self.probe = _codec.PROBE + secrets.token_hex(8).encode()
        self.echoes = set()
        return self.probe

    @property
    def ready(self) -> bool:
        return len(self.echoes) >= self.needed


class Decoder:
    """Turns the frames a receiver delivers into ``pending`` entries, counting as it goes
    (``counters``); a durable subscriber's drops what it took before (``duplicates``)
    and tells ``acknowledgements`` of each frame of the server's."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        readiness: Readiness,
        batch_topic: bytes | None,
        max_message_size: int,
        acknowledgements: Acknowledgements | None,
        gaps: bool = True,
    ) -> None:
        self.subscriptions = subscriptions
        self._topics = subscriptions.topics  # the same dict, one lookup nearer
        self.readiness = readiness
        # b"\xff" (a control topic no one sends) when the transport routes no batches
        self.batch_topic = batch_topic or _CONTROL
        self.acknowledgements = acknowledgements
        self.pending: deque[Entry] = deque()
        self.counters = {"received": 0, "dropped": 0, "missed": 0}
        # A durable subscriber keeps what it took, to drop what comes again; not a group's
        # member, whose share has gaps by design (what the server delivers again may have
        # been another member's: it is handed, and counted by the receiver).
        durable = acknowledgements is not None and gaps
        if durable:
            self.counters["duplicates"] = 0
        # Per (channel's topic, sender), for a durable subscriber: what it took.
        self._seen: dict[tuple[bytes, int], Seen] | None = {} if durable else None
        self._max_body = _HEADER_SIZE + max_message_size
        self._gaps = gaps  # False for a queue group's member: its share has gaps by design

    def take(self, frames: list[bytes]) -> int:
        """Checks and decodes what arrived into pending entries; returns how many."""
        if len(frames) != 2:
            self.counters["dropped"] += 1
            return 0
        topic, body = frames
        if topic == self.batch_topic:
            return self._take_messages(body, topic, True)
        taken = self._take_messages(body, topic, False)
        if self.acknowledgements is not None and topic[:1] != _CONTROL:
            self.acknowledgements.taken(taken)  # a frame of the server's, to acknowledge
        return taken

    def _take_messages(self, data: bytes, topic: bytes, batched: bool) -> int:
        """Takes the messages of one frame's body, on ``topic``, or of a batch, whose
        records each hold a topic and a body.

        One message on a channel subscribed to exactly is taken here, inline, since
        this loop is what a subscriber of many channels spends its time on; any other
        topic goes through ``_admit`` first, and several messages in one body (or a
        durable subscriber's) through ``_take_run``.
        """
        topics = self._topics
        pending = self.pending
        append = pending.append
        max_body = self._max_body
        before = len(pending)
        dropped = missed = 0
        offset = 0
        end = len(data)
        more = not batched or end > 0
        if not more:  # a hub sends no empty batch
            dropped += 1
        try:
            while more:
                if batched:
                    length, topic_length, count = _unpack_record(data, offset)
                    start = offset + _RECORD_SIZE
                    offset = start + length
                    if offset > end:  # a record longer than what is left: the rest is unreadable
                        dropped += 1
                        break
                    more = offset < end
                    split = start + topic_length
                    topic = data[start:split]
                else:  # the count of messages in a frame is read from its body
                    split = count = 0
                    offset = end
                    more = False
                state = topics.get(topic)
                size = offset - split
                # A lone message in a batch is not held to bus.max_message_size here:
                # the hub checked it against its own.
                if (
                    state is None
                    or not state.exact
                    or size < _HEADER_SIZE
                    or (count != 1 and size > max_body)
                ):
                    state = self._admit(topic, data, split, offset, batched)
                    if state is None:
                        continue
                    count = 0  # as in a frame: the body says how many it holds
                sender, sequence = _unpack_header(data, split)
                if count != 1 and (
                    self._seen is not None
                    or data.find(_SEPARATOR, split + _HEADER_SIZE, offset) >= 0
                ):
                    self._take_run(
                        topic, state, sender, sequence, data[split + _HEADER_SIZE : offset]
                    )
                    continue
                try:
                    append((topic, sender, sequence, _loads(data[split + _HEADER_SIZE : offset])))
                except orjson.JSONDecodeError:  # a request, numbers orjson cannot hold, or bad
                    text = data[split + _HEADER_SIZE : offset]
                    if not self._take_request(topic, sender, sequence, text):
                        try:
                            append((topic, sender, sequence, _decode_wide(text)))
                        except ValueError:  # it came, unreadable: dropped, not missed
                            dropped += 1
                # Topic.missed()'s first case, inline: the latest sender on this channel again
                if sender == state.sender:
                    if sequence > state.last + 1:
                        missed += sequence - state.last - 1
                    state.last = sequence
                else:
                    missed += state.missed(sender, sequence, sequence)
        except struct.error:  # a record's header cut short: nothing after it can be read
            dropped += 1
        taken = len(pending) - before
        counters = self.counters
        counters["received"] += taken
        if dropped:
            counters["dropped"] += dropped
        if missed and self._gaps:
            counters["missed"] += missed
        return taken

    def _admit(
        self, topic: bytes, data: bytes, start: int, end: int, batched: bool
    ) -> Topic | None:
        """The state of a topic whose body ``data[start:end]`` is to be taken, or None
        (counted dropped when it is bad): a bus signal is none, a channel not subscribed
        to exactly must be one that '' or a pattern asked for."""
        counters = self.counters
        subscriptions = self.subscriptions
        state = subscriptions.topics.get(topic)
        if state is None or not state.exact:  # an exact channel's topic is valid
            if not topic:
                counters["dropped"] += 1
                return None
            if topic[0] == _codec.CONTROL_BYTE:
                if batched:  # no bus signal travels in a batch
                    counters["dropped"] += 1
                elif topic == self.readiness.probe and end - start >= _HEADER_SIZE:
                    self.readiness.echoes.add(_unpack_header(data, start)[0])
                return None  # another party's bus signal
            if topic[-1] != _codec.CONTROL_BYTE:
                counters["dropped"] += 1
                return None
            try:
                if not subscriptions.wants(topic):
                    return None
            except UnicodeDecodeError:
                counters["dropped"] += 1
                return None
            state = subscriptions.topic(topic)
        if not _HEADER_SIZE <= end - start <= self._max_body:  # a hub checks; a broker may not
            counters["dropped"] += 1
            return None
        return state

    def _take_run(self, topic: bytes, state: Topic, sender: int, first: int, texts: bytes) -> None:
        """Takes the JSON texts of one body: a run joined by the hub, with consecutive
        sequence numbers from ``first``, or what a durable subscriber takes."""
        parts = texts.split(_SEPARATOR)
        if self._seen is not None:
            self._take_stored(topic, sender, first, parts)
            return
        counters = self.counters
        append = self.pending.append
        for offset, part in enumerate(parts):
            try:
                append((topic, sender, first + offset, _loads(part)))
            except orjson.JSONDecodeError:
                if not self._take_request(topic, sender, first + offset, part):
                    try:
                        append((topic, sender, first + offset, _decode_wide(part)))
                    except ValueError:
                        counters["dropped"] += 1
        missed = state.missed(sender, first, first + len(parts) - 1)
        if self._gaps:
            counters["missed"] += missed

    def _take_request(self, topic: bytes, sender: int, sequence: int, text: bytes) -> bool:
        """Takes a request's text (its reply address, then JSON); False when it is not one."""
        if not text or text[0] != _REQUEST_MARK:
            return False
        request = _codec.split_request(text)
        if request is None:
            return False
        reply_at, json = request
        try:
            message = _loads(json)
        except orjson.JSONDecodeError:
            try:
                message = _decode_wide(json)  # numbers orjson cannot hold
            except ValueError:
                return False
        self.pending.append((topic, sender, sequence, message, reply_at))
        return True

    def _take_stored(self, topic: bytes, sender: int, first: int, parts: list[bytes]) -> None:
        """A durable subscriber's: what was taken before is dropped (``duplicates``), and
        a gap that the server fills later is no longer counted missed."""
        assert self._seen is not None
        counters = self.counters
        key = (topic, sender)
        seen = self._seen.get(key)
        if seen is None:  # the first from this sender here: what came before is not ours
            seen = self._seen[key] = Seen(first)
        append = self.pending.append
        for offset, part in enumerate(parts):
            change = seen.record(first + offset)
            if change is None:
                counters["duplicates"] += 1
                continue
            if self._gaps:
                counters["missed"] += change
            try:
                append((topic, sender, first + offset, _loads(part)))
            except orjson.JSONDecodeError:
                try:
                    append((topic, sender, first + offset, _decode_wide(part)))
                except ValueError:
                    counters["dropped"] += 1
