"""The subscriber: one receiver of its own, the checks of what arrives, decoding once.

Everything that arrives is checked here, since anyone may reach a hub: a
message of the wrong shape, a channel that is not UTF-8 or a body that is not
JSON is dropped and counted in ``stats['dropped']``. Sequence numbers per
publishing process and channel reveal what the transport dropped (a
subscriber too far behind, a hub restart): ``stats['missed']``.

Sync and async share every step but the wait: ``_take`` turns frames into
entries, ``_next_entry`` hands them out; only waiting differs (the transport's
``receive(timeout)`` or ``await wait_async(timeout)``).
"""

from __future__ import annotations

import re
import secrets
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

import orjson

from . import _codec, _outbox
from ._message import Message
from ._settings import BusSettings, as_context
from ._transports import transport_for
from .context import Context
from .errors import AuthenticationError, ClosedError

SWITCH_INTERVAL = 0.1  # iteration reads general.switch at most this often, in seconds
FORGET_TIMEOUT = 5.0  # seconds close(forget=True) waits for the server to delete a position
WAIT_SLICE = 0.25  # an endless wait wakes this often, so close() from another thread is seen

# A subscriber with fewer than DRAIN_BELOW messages decoded takes those already queued
# at its socket in one go, up to that many, rather than one per call.
DRAIN_BELOW = 256

# (topic, sender, sequence, message)
_Entry = tuple[bytes, int, int, Any]


class _Topic:
    """What a subscriber keeps per topic: how many times it subscribed to it exactly
    (0 for a topic that reached it through a pattern or ''), and the last sequence
    number seen from each sender, the latest sender's apart (most channels have one)."""

    __slots__ = ("last", "others", "sender", "subscriptions")

    def __init__(self) -> None:
        self.subscriptions = 0
        self.sender: int | None = None
        self.last = 0
        self.others: dict[int, int] | None = None

    def missed(self, sender: int, first: int, last: int) -> int:
        """Records messages ``first`` to ``last`` of ``sender``; returns the gap before."""
        if sender == self.sender:
            previous: int | None = self.last
        else:
            if self.sender is not None:
                if self.others is None:
                    self.others = {}
                self.others[self.sender] = self.last
            previous = None if self.others is None else self.others.pop(sender, None)
            self.sender = sender
        self.last = last
        return first - previous - 1 if previous is not None and first > previous + 1 else 0


class _Seen:
    """What a durable subscriber took from one sender on one channel: every sequence
    number up to ``floor``, and those in ``above``; ``highest`` is the latest. A message
    the server delivers again is one of these: dropped, not handed twice."""

    __slots__ = ("above", "floor", "highest")

    LIMIT = 10_000  # numbers kept above a gap; beyond, the oldest gaps are given up

    def __init__(self, first: int) -> None:
        self.floor = self.highest = first - 1
        self.above: set[int] = set()

    def record(self, sequence: int) -> int | None:
        """None when ``sequence`` was taken before; else how the count of gaps changed."""
        above = self.above
        if sequence <= self.floor or sequence in above:
            return None
        before = self.highest - self.floor - len(above)
        if sequence == self.floor + 1:
            self.floor = sequence
            while self.floor + 1 in above:
                self.floor += 1
                above.discard(self.floor)
        else:
            above.add(sequence)
        self.highest = max(self.highest, sequence)
        change = self.highest - self.floor - len(above) - before
        if len(above) > self.LIMIT:  # a gap that never filled: counted missed, and let go
            self.floor = min(above)
            above.discard(self.floor)
            while self.floor + 1 in above:
                self.floor += 1
                above.discard(self.floor)
        return change


def compile_pattern(pattern: str) -> tuple[bytes, re.Pattern[str]]:
    """The transport prefix and the matcher of a NATS-style pattern (``a.*.c``, ``a.>``)."""
    tokens = pattern.split(".")
    parts: list[str] = []
    literal: list[str] = []
    wildcard_seen = False
    for index, token in enumerate(tokens):
        if token == "*":
            parts.append(r"[^.]+")
            wildcard_seen = True
        elif token == ">":
            if index != len(tokens) - 1:
                raise ValueError(
                    f"In the pattern {pattern!r}, '>' must be the last token, as in 'votes.>'"
                )
            parts.append(r".+")
            wildcard_seen = True
        elif not token or "*" in token or ">" in token:
            raise ValueError(
                f"The pattern {pattern!r} has the token {token!r}: tokens are separated by "
                "single dots, and '*' or '>' stand alone, as in 'votes.*' or 'votes.>'"
            )
        else:
            parts.append(re.escape(token))
            if not wildcard_seen:
                literal.append(token)
    prefix = ".".join(literal) + "." if literal else ""
    return prefix.encode("utf-8"), re.compile(r"\.".join(parts))


def _is_pattern(channel: str) -> bool:
    # Any '*' or '>' makes a pattern, so that a misplaced one ('votes.a*') is refused
    # with a ValueError rather than taken silently as a plain channel name.
    return "*" in channel or ">" in channel


class Subscriber:
    """Receives the messages published on some channels.

    Example::

        subscriber = bus.subscribe(['direct-1', 'direct-2'])
        subscriber.wait_ready()
        message = subscriber.get(block=True, timeout=5.0)

    One subscriber is used by one thread (or one asyncio task) at a time; only
    ``close()`` may come from another thread, to end a wait or an iteration there.
    """

    def __init__(
        self,
        context: Context | str | None,
        channels: str | list[str],
        pattern: bool = False,
        durable: str | None = None,
    ) -> None:
        self.context = as_context(context, "Subscriber()")
        self.settings = BusSettings.from_context(self.context)
        names = _codec.check_subscription(channels)  # before a socket is opened for nothing
        if not names:  # the original refuses it too: such a subscriber would wait forever
            raise ValueError(
                "A subscriber needs at least one channel ('' for every channel); it got "
                f"{channels!r}. To add channels as they come, subscribe to one and call "
                "subscriber.subscribe(['more', ...]) on the live subscriber"
            )
        self._receiver = transport_for(self.settings).open_receiver(durable)
        self.durable = durable
        # A durable subscriber: what it took per (channel, sender), to drop what comes again;
        # per channel frame taken, how many of its messages the program was not handed yet,
        # and how many were handed since the last acknowledgement.
        self._durable = durable is not None
        self._seen: dict[tuple[bytes, int], _Seen] = {}
        self._unsettled: deque[int] = deque()
        self._handed = 0
        self._forget = False
        # b"\xff" (a control topic no one sends) when the transport routes no batches
        self._batch_topic = self._receiver.batch_topic or _codec.CONTROL
        self._topics: dict[bytes, _Topic] = {}
        self._patterns: dict[str, tuple[bytes, re.Pattern[str], int]] = {}
        self._everything = 0
        self._pending: deque[_Entry] = deque()
        self._counters = {"received": 0, "dropped": 0, "missed": 0}
        if self._durable:
            self._counters["duplicates"] = 0
        self._probe = b""
        self._ready = False
        # Readiness: the senders whose copy of the current probe came back, and how
        # many copies prove it (one through a hub, one per node of a cluster).
        self._echoes: set[int] = set()
        self._echoes_needed = 1
        self._max_body = _HEADER_SIZE + self.settings.max_message_size
        self._closed = False
        self._next_switch_check = 0.0
        # While a thread (or task) waits on the receiver, close() from elsewhere only marks
        # the subscriber closed, and the waiting side frees the receiver when its wait ends:
        # a ZeroMQ socket must never be used by two threads at once.
        self._receiving = False
        self._released = False
        self._release_lock = threading.Lock()
        self.subscribe(list(names), pattern=pattern)  # names: channels may be a generator

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, channels: str | list[str], pattern: bool = False) -> None:
        """Adds channels (or, with ``pattern=True``, patterns such as ``votes.*``).

        Raises ``ValueError`` for an invalid pattern, before adding any of ``channels``.
        An empty list adds nothing, and leaves readiness as it was.
        """
        self._check_open()
        names = _codec.check_subscription(channels)
        if not names:
            return
        compiled = {
            channel: compile_pattern(channel)
            for channel in names
            if channel and pattern and _is_pattern(channel) and channel not in self._patterns
        }
        for channel in names:
            if not channel:
                self._everything += 1
                self._receiver.subscribe(b"")
            elif pattern and _is_pattern(channel):
                if channel in self._patterns:
                    prefix, matcher, count = self._patterns[channel]
                else:
                    (prefix, matcher), count = compiled[channel], 0
                self._patterns[channel] = (prefix, matcher, count + 1)
                self._receiver.subscribe(prefix, channel)
            else:
                topic = _codec.topic_of(channel)
                self._topic(topic).subscriptions += 1
                self._receiver.subscribe(topic)
        self._renew_probe()

    def unsubscribe(self, channels: str | list[str], pattern: bool = False) -> None:
        """Removes channels or patterns given to ``subscribe()`` before.

        Raises ``ValueError`` for one this subscriber does not have, before removing
        any of ``channels``.
        """
        self._check_open()
        names = _codec.check_subscription(channels)
        wanted = Counter(names)
        for channel, times in wanted.items():
            if not channel:
                if self._everything < times:
                    raise ValueError("unsubscribe(''): this subscriber is not subscribed to ''")
            elif pattern and _is_pattern(channel):
                if self._patterns.get(channel, (b"", None, 0))[2] < times:
                    raise ValueError(f"unsubscribe(): no pattern {channel!r} to remove")
            elif self._subscriptions_to(_codec.topic_of(channel)) < times:
                raise ValueError(f"unsubscribe(): this subscriber has no channel {channel!r}")
        for channel in names:
            if not channel:
                self._everything -= 1
                self._receiver.unsubscribe(b"")
            elif pattern and _is_pattern(channel):
                prefix, matcher, count = self._patterns[channel]
                if count > 1:
                    self._patterns[channel] = (prefix, matcher, count - 1)
                else:
                    del self._patterns[channel]
                self._receiver.unsubscribe(prefix, channel)
            else:
                topic = _codec.topic_of(channel)
                self._topics[topic].subscriptions -= 1
                self._receiver.unsubscribe(topic)

    def _topic(self, topic: bytes) -> _Topic:
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic()
        return state

    def _subscriptions_to(self, topic: bytes) -> int:
        state = self._topics.get(topic)
        return 0 if state is None else state.subscriptions

    def _renew_probe(self) -> None:
        """Subscribes to a new probe topic, after the channels: when the hub echoes it,
        every subscription made before it is live there too (they travel in order)."""
        if self._probe:
            self._receiver.unsubscribe(self._probe)
        self._probe = _codec.PROBE + secrets.token_hex(8).encode()
        self._receiver.subscribe(self._probe)
        self._ready = False
        self._echoes = set()

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Waits until this subscriber's subscriptions are live at the hub.

        Returns True then (nothing published afterwards is lost while the
        subscriber keeps up), False when ``timeout`` seconds passed first.
        Messages that arrive meanwhile are kept for ``get()``. Each call checks
        anew: after a hub restart or takeover, it waits for the new hub.
        On a secured bus (``bus.curve.*``), raises ``AuthenticationError`` as soon as
        the hub refused this process's handshake, saying which side and what to check.
        """
        self._check_open()
        if self._ready:  # an echo of an older probe would prove nothing about the hub now
            self._renew_probe()
        outbox = _outbox.outbox_for(self.settings)
        deadline = time.monotonic() + timeout
        interval = 0.01
        generation = self._receiver.generation
        while not self._ready:
            now = time.monotonic()
            if now >= deadline:
                return False
            if self._receiver.generation != generation:  # reconnected: echoes before prove
                generation = self._receiver.generation  # nothing about the server now
                self._renew_probe()
            self._echoes_needed = outbox.send_probe(self._probe)
            self._ready = len(self._echoes) >= self._echoes_needed
            until = min(deadline, now + interval)
            self._receiving = True
            try:
                while not self._ready and (remaining := until - time.monotonic()) > 0:
                    if self._closed:
                        return False
                    frames = self._receiver.receive(remaining)
                    if frames is not None:
                        self._take(frames)
            finally:
                self._receiving = False
                if self._closed:
                    self._release()
            # A secured hub that refused us would never echo: say why, within the timeout.
            if not self._ready:
                refused = self._receiver.handshake_failure() or outbox.handshake_failure()
                if refused is not None:
                    raise AuthenticationError(refused)
            interval = min(interval * 2, 0.2)
        return True

    # -- receiving ----------------------------------------------------------------

    def get(self, block: bool = False, timeout: float | None = None) -> Any:
        """The next message, or None when none arrived (waiting first if ``block``).

        With ``block=True``, waits until a message arrives, or at most
        ``timeout`` seconds when given.
        """
        pending = self._pending
        if pending and not self._closed and not self._durable:  # what arrived goes out at once
            return pending.popleft()[3]
        entry = self._next_entry(block, timeout)
        return None if entry is None else entry[3]

    def receive(self, block: bool = False, timeout: float | None = None) -> Message | None:
        """Like ``get()``, but the message comes in its envelope: a ``Message``."""
        entry = self._next_entry(block, timeout)
        return None if entry is None else _envelope(entry)

    def __iter__(self) -> Iterator[Message]:
        """Yields messages as they arrive, until closed or ``general.switch`` is ``'off'``."""
        while not self._iteration_ends():
            entry = self._next_entry(True, SWITCH_INTERVAL, closing_ends=True)
            if entry is not None:
                yield _envelope(entry)

    async def aget(self, timeout: float | None = None) -> Any:
        """Waits, without blocking the event loop, for the next message; None on timeout."""
        entry = await self._anext_entry(timeout)
        return None if entry is None else entry[3]

    async def areceive(self, timeout: float | None = None) -> Message | None:
        """Like ``aget()``, with the envelope: a ``Message``, or None on timeout."""
        entry = await self._anext_entry(timeout)
        return None if entry is None else _envelope(entry)

    async def __aiter__(self) -> AsyncIterator[Message]:
        """Yields messages as they arrive, until closed or ``general.switch`` is ``'off'``."""
        while not self._iteration_ends():
            entry = await self._anext_entry(SWITCH_INTERVAL, closing_ends=True)
            if entry is not None:
                yield _envelope(entry)

    def _iteration_ends(self) -> bool:
        """True once closed, or once the switch is off (read at most every SWITCH_INTERVAL)."""
        if self._closed:
            return True
        now = time.monotonic()
        if now < self._next_switch_check:
            return False
        self._next_switch_check = now + SWITCH_INTERVAL
        return self.context.is_switched_off()

    def _next_entry(
        self, block: bool, timeout: float | None, closing_ends: bool = False
    ) -> _Entry | None:
        if self._closed:
            if closing_ends:
                return None
            raise ClosedError("This subscriber was closed; make a new one with bus.subscribe()")
        if self._durable:
            self._settle()  # the program asks for the next: it is past the one handed
        if self._pending:
            return self._hand(self._pending.popleft())
        if not block:
            timeout = 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        receive = self._receiver.receive
        self._receiving = True
        try:
            while not self._closed:  # seen here, a close() from elsewhere left the socket to us
                if deadline is None:
                    wait: float | None = WAIT_SLICE
                else:
                    wait = max(0.0, deadline - time.monotonic())
                frames = receive(wait)
                if frames is not None:
                    self._take(frames)
                    pending = self._pending
                    if len(pending) < DRAIN_BELOW:  # behind the stream: take what is queued
                        for more in self._receiver.receive_more():
                            self._take(more)
                            if len(pending) >= DRAIN_BELOW:
                                break
                    if self._durable:
                        self._settle()  # what came again, and nothing else: done with
                    if pending:
                        return self._hand(pending.popleft())
                    continue
                # Quiet: a secured hub taken over by one with another key says so here.
                refused = self._receiver.handshake_failure()
                if refused is not None:
                    raise AuthenticationError(refused)
                if self._closed or (deadline is not None and time.monotonic() >= deadline):
                    return None
            return None
        finally:
            self._receiving = False
            if self._closed:
                self._release()

    async def _anext_entry(
        self, timeout: float | None, closing_ends: bool = False
    ) -> _Entry | None:
        # Messages are only taken in _next_entry, never across an await: a cancelled
        # wait leaves whatever arrived for the next call.
        loop_deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            entry = self._next_entry(False, 0.0, closing_ends=closing_ends)
            if entry is not None or self._closed:
                return entry
            remaining = None if loop_deadline is None else loop_deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._receiving = True
            try:
                if self._closed:
                    return None
                await self._receiver.wait_async(
                    WAIT_SLICE if remaining is None else min(remaining, WAIT_SLICE)
                )
            finally:
                self._receiving = False
                if self._closed:
                    self._release()
            if self._closed:  # during the wait: it ends with None, as get(block=True) does
                return None

    def _take(self, frames: list[bytes]) -> int:
        """Checks and decodes what arrived into pending entries; returns how many."""
        if len(frames) != 2:
            self._counters["dropped"] += 1
            return 0
        topic, body = frames
        if topic == self._batch_topic:
            return self._take_batch(body)
        taken = self._take_message(topic, body)
        if self._durable and topic[:1] != _CONTROL:  # a frame of the server's, to acknowledge
            self._unsettled.append(taken)
        return taken

    def _hand(self, entry: _Entry) -> _Entry:
        if self._durable:
            self._handed += 1
        return entry

    def _settle(self) -> None:
        """Acknowledges the frames whose messages were all handed to the program, once it
        asks for more (or closes): the oldest first, as they came."""
        handed, self._handed = self._handed, 0
        unsettled = self._unsettled
        frames = 0
        while unsettled:
            left = unsettled[0]
            if left > handed:
                unsettled[0] = left - handed
                break
            handed -= left
            unsettled.popleft()
            frames += 1
        if frames:
            self._receiver.acknowledge(frames)

    def _take_batch(self, batch: bytes) -> int:
        """Takes the messages of a batch that the hub routed to this subscriber.

        Most records hold one message on an exact channel: those are taken here,
        inline, since this loop is what a subscriber of many channels spends its
        time on; the others go through ``_take_message``.
        """
        topics = self._topics
        pending = self._pending
        append = pending.append
        before = len(pending)
        taken = missed = 0
        offset = 0
        end = len(batch)
        if not end:  # a hub sends no empty batch
            self._counters["dropped"] += 1
        try:
            while offset < end:
                length, topic_length, count = _unpack_record(batch, offset)
                start = offset + _RECORD_SIZE
                offset = start + length
                if offset > end:  # a record longer than what is left: the rest is unreadable
                    self._counters["dropped"] += 1
                    break
                split = start + topic_length
                topic = batch[start:split]
                state = topics.get(topic)
                if (
                    count != 1
                    or state is None
                    or not state.subscriptions
                    or length < topic_length + _HEADER_SIZE
                ):
                    if topic[:1] == _codec.CONTROL:  # no bus signal travels in a batch
                        self._counters["dropped"] += 1
                    else:
                        taken += self._take_message(topic, batch[split:offset])
                    continue
                sender, sequence = _unpack_header(batch, split)
                try:
                    append((topic, sender, sequence, _loads(batch[split + _HEADER_SIZE : offset])))
                except orjson.JSONDecodeError:  # it came, unreadable: dropped, not missed
                    self._counters["dropped"] += 1
                # _Topic.missed()'s first case, inline: the latest sender on this channel again
                if sender == state.sender:
                    if sequence > state.last + 1:
                        missed += sequence - state.last - 1
                    state.last = sequence
                else:
                    missed += state.missed(sender, sequence, sequence)
        except struct.error:  # a record's header cut short: nothing after it can be read
            self._counters["dropped"] += 1
        inline = len(pending) - before - taken
        counters = self._counters
        counters["received"] += inline
        counters["missed"] += missed
        return taken + inline

    def _take_message(self, topic: bytes, body: bytes) -> int:
        counters = self._counters
        state = self._topics.get(topic)
        if state is None or not state.subscriptions:  # an exact channel's topic is valid
            if not topic:
                counters["dropped"] += 1
                return 0
            if topic[0] == _codec.CONTROL_BYTE:
                if topic == self._probe and len(body) >= _HEADER_SIZE:
                    self._echoes.add(_unpack_header(body)[0])
                    self._ready = len(self._echoes) >= self._echoes_needed
                return 0  # another party's bus signal
            if topic[-1] != _codec.CONTROL_BYTE:
                counters["dropped"] += 1
                return 0
            if not self._wants(topic):
                return 0
            state = self._topic(topic)
        if not _HEADER_SIZE <= len(body) <= self._max_body:  # a hub checks; a broker may not
            counters["dropped"] += 1
            return 0
        sender, sequence = _unpack_header(body)
        if self._durable:
            return self._take_stored(topic, sender, sequence, body)
        pending = self._pending
        if body.find(_SEPARATOR, _HEADER_SIZE) < 0:  # one message: the common case when idle
            count = 1
            try:
                pending.append((topic, sender, sequence, _loads(body[_HEADER_SIZE:])))
                taken = 1
            except orjson.JSONDecodeError:
                counters["dropped"] += 1
                taken = 0
        else:  # a run joined by the hub: consecutive sequence numbers from the header's
            parts = body[_HEADER_SIZE:].split(_SEPARATOR)
            count = len(parts)
            taken = 0
            append = pending.append
            for offset, part in enumerate(parts):
                try:
                    append((topic, sender, sequence + offset, _loads(part)))
                except orjson.JSONDecodeError:
                    counters["dropped"] += 1
                    continue
                taken += 1
        counters["missed"] += state.missed(sender, sequence, sequence + count - 1)
        counters["received"] += taken
        return taken

    def _take_stored(self, topic: bytes, sender: int, sequence: int, body: bytes) -> int:
        """A durable subscriber's ``_take_message``: what was taken before is dropped
        (``stats['duplicates']``), and a gap that the server fills later is no longer
        counted missed."""
        counters = self._counters
        key = (topic, sender)
        seen = self._seen.get(key)
        if seen is None:  # the first from this sender here: what came before is not ours
            seen = self._seen[key] = _Seen(sequence)
        parts = body[_HEADER_SIZE:].split(_SEPARATOR)
        taken = 0
        append = self._pending.append
        for offset, part in enumerate(parts):
            change = seen.record(sequence + offset)
            if change is None:
                counters["duplicates"] += 1
                continue
            counters["missed"] += change
            try:
                append((topic, sender, sequence + offset, _loads(part)))
            except orjson.JSONDecodeError:
                counters["dropped"] += 1
                continue
            taken += 1
        counters["received"] += taken
        return taken

    def _wants(self, topic: bytes) -> bool:
        """For subscribers of everything or of patterns: a valid channel they asked for."""
        try:
            channel = _codec.channel_of(topic)
        except UnicodeDecodeError:
            self._counters["dropped"] += 1
            return False
        if self._everything:
            return True
        return any(matcher.fullmatch(channel) for _, matcher, _ in self._patterns.values())

    # -- life cycle ---------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """``received`` messages, ``dropped`` bad input, ``missed`` gaps in sequences;
        for a durable subscriber, ``duplicates``: messages the server delivered again,
        which the program was not handed twice."""
        return dict(self._counters)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, forget: bool = False) -> None:
        """Stops receiving and frees the subscriber's socket; idempotent.

        A durable subscriber acknowledges the messages handed to the program, and the
        server keeps its position for the next one of its name; with ``forget=True``,
        the server deletes that position (raises ``TransportError`` if it could not).

        Afterwards ``get()`` and ``receive()`` raise ``ClosedError``, iteration
        ends, and a wait in progress returns None. Called from another thread
        than the one waiting, it only marks the subscriber closed and wakes an
        ``aget()``; the waiting thread sees it within a fraction of a second and
        frees the socket itself.
        """
        if forget and not self._durable:
            raise ValueError("close(forget=True) is for a durable subscriber (durable=...)")
        self._forget = forget
        if self._closed:
            if forget:  # closed before: the position is forgotten now
                self._receiver.forget(FORGET_TIMEOUT)
            return
        if self._durable and not self._receiving:
            self._settle()
        # Set before _receiving is read, where _next_entry sets _receiving before it
        # reads _closed: one of the two sides sees the other. _pending is left alone
        # (another thread may be taking from it); nothing reads it once closed.
        self._closed = True
        self._receiver.interrupt()  # ends a wait in progress, from any thread
        if not self._receiving:  # else the receiving thread frees it when its wait ends
            self._release()

    def _release(self) -> None:
        """Frees the receiver once, whichever side (closer or waiter) comes last."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        if self._forget:
            self._receiver.forget(FORGET_TIMEOUT)
        else:
            self._receiver.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and self._durable:
            self._handed = 0  # the program failed on the message in hand: it comes again
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("This subscriber was closed; make a new one with bus.subscribe()")


_unpack_header = _codec.HEADER.unpack_from
_unpack_record = _codec.RECORD.unpack_from
_RECORD_SIZE = _codec.RECORD_SIZE
_loads = orjson.loads
_SEPARATOR = _codec.BATCH_SEPARATOR
_HEADER_SIZE = _codec.HEADER_SIZE
_CONTROL = bytes([_codec.CONTROL_BYTE])


def _envelope(entry: _Entry) -> Message:
    topic, sender, sequence, message = entry
    return Message(_codec.channel_of(topic), message, sender, sequence)
