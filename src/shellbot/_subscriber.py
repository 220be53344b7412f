"""The subscriber: one receiver of its own, its subscriptions, and the waits.

What arrives is checked, counted and decoded once, by the subscriber's ``Decoder``
(``_decoder``); what it subscribed to is held by ``Subscriptions``
(``_subscriptions``); a durable subscriber's bookkeeping is in ``_durable``.

Sync and async share every step but the wait: ``_next_entry`` takes frames and
hands out entries; only waiting differs (the transport's ``receive(timeout)`` or
``await wait_async(timeout)``). Every use of the receiver that may wait is
bracketed by ``with self._handover:``, the close handshake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

from . import _codec
from ._decoder import Decoder, Entry, Readiness
from ._durable import Acknowledgements
from ._message import Message
from ._publishing import outbox as _outbox
from ._requests import Replier
from ._settings import BusSettings, as_context
from ._subscriptions import Subscriptions
from ._transports import transport_for
from .context import Context
from .errors import AuthenticationError, ClosedError

SWITCH_INTERVAL = 0.1  # iteration reads general.switch at most this often, in seconds
FORGET_TIMEOUT = 5.0  # seconds close(forget=True) waits for the server to delete a position
WAIT_SLICE = 0.25  # an endless wait wakes this often, so close() from another thread is seen

# A subscriber with fewer than DRAIN_BELOW messages decoded takes those already queued
# at its socket in one go, up to that many, rather than one per call.
DRAIN_BELOW = 256


class _Handover:
    """The close handshake, which decides who frees the receiver.

    While a thread (or task) waits on the receiver (``with handover:``), close() from
    elsewhere only marks the subscriber closed, and the waiting side frees the
    receiver when its wait ends: a ZeroMQ socket must never be used by two threads
    at once.
    """

    __slots__ = ("_free", "_lock", "_released", "closed", "receiving")

    def __init__(self, free: Callable[[], None]) -> None:
        self.closed = False
        self.receiving = False
        self._free = free
        self._released = False
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self.receiving = True

    def __exit__(self, *exc_info: object) -> None:
        self.receiving = False
        if self.closed:
            self.release()

    def close(self, interrupt: Callable[[], None]) -> None:
        """Marks closed, ends a wait in progress (``interrupt``, from any thread), and
        frees the receiver unless a wait is in progress: that side frees it then."""
        # Set before receiving is read, where __enter__ sets receiving before the waiting
        # side reads closed: one of the two sides sees the other.
        self.closed = True
        interrupt()
        if not self.receiving:
            self.release()

    def release(self) -> None:
        """Frees the receiver once, whichever side (closer or waiter) comes last."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._free()


class Subscriber:
    """Receives the messages published on some channels.

    Example::

        subscriber = bus.subscribe(['direct-1', 'direct-2'])
        subscriber.wait_ready()
        message = subscriber.get(block=True, timeout=5.0)

    One subscriber is used by one thread (or one asyncio task) at a time; only
    ``close()`` may come from another thread, to end a wait or an iteration there.
    """

    # Kept from the original API, where tests injected a socket: the bus's sockets are
    # its transport's, and nothing reads this one.
    socket: None = None

    def __init__(
        self,
        context: Context | str | None,
        channels: str | list[str],
        pattern: bool = False,
        durable: str | None = None,
        group: str | None = None,
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
        self.group = _codec.check_group(group)
        self._receiver = transport_for(self.settings).open_receiver(durable, group=self.group)
        self.durable = durable
        # A durable subscriber acknowledges the frames whose messages it handed.
        self._acknowledgements = (
            None if durable is None else Acknowledgements(self._receiver.acknowledge)
        )
        self._forget = False
        # Neither acknowledged nor a group's member: get() hands what is decoded at once.
        self._plain = durable is None and self.group is None
        self._subscriptions = Subscriptions()
        self._readiness = Readiness()
        self._decoder = Decoder(
            self._subscriptions,
            self._readiness,
            self._receiver.batch_topic,
            self.settings.max_message_size,
            self._acknowledgements,
            gaps=self.group is None,  # a member sees its share alone: gaps mean nothing
        )
        self._pending = self._decoder.pending
        self._next_switch_check = 0.0
        self._handover = _Handover(self._free_receiver)
        self.subscribe(list(names), pattern=pattern)  # names: channels may be a generator

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, channels: str | list[str], pattern: bool = False) -> None:
        """Adds channels (or, with ``pattern=True``, patterns such as ``votes.*``).

        Raises ``ValueError`` for an invalid pattern, before adding any of ``channels``.
        An empty list adds nothing, and leaves readiness as it was.

        Raises:
            ValueError: an invalid pattern or channel.
            TypeError: a channel that is not a str.
            ClosedError: the subscriber is closed.
        """
        self._check_open()
        names = _codec.check_subscription(channels)
        if not names:
            return
        for prefix, matched in self._subscriptions.add(names, pattern):
            self._receiver.subscribe(prefix, matched)
        self._renew_probe()

    def unsubscribe(self, channels: str | list[str], pattern: bool = False) -> None:
        """Removes channels or patterns given to ``subscribe()`` before.

        Raises ``ValueError`` for one this subscriber does not have, before removing
        any of ``channels``.

        Raises:
            ValueError: a channel or pattern this subscriber does not have.
            ClosedError: the subscriber is closed.
        """
        self._check_open()
        names = _codec.check_subscription(channels)
        for prefix, matched in self._subscriptions.remove(names, pattern):
            self._receiver.unsubscribe(prefix, matched)

    def _renew_probe(self) -> None:
        """Subscribes to a new probe topic, after the channels: when the hub echoes it,
        every subscription made before it is live there too (they travel in order)."""
        if self._readiness.probe:
            self._receiver.unsubscribe(self._readiness.probe)
        self._receiver.subscribe(self._readiness.renew())

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Waits until this subscriber's subscriptions are live at the hub.

        Returns True then (nothing published afterwards is lost while the
        subscriber keeps up), False when ``timeout`` seconds passed first.
        Messages that arrive meanwhile are kept for ``get()``. Each call checks
        anew: after a hub restart or takeover, it waits for the new hub.
        On a secured bus (``bus.curve.*``), raises ``AuthenticationError`` as soon as
        the hub refused this process's handshake, saying which side and what to check.

        Args:
            timeout: seconds to wait, at most.

        Returns:
            True once the subscriptions are live, False on timeout.

        Raises:
            AuthenticationError: a secured hub refused this process.
            ClosedError: the subscriber is closed.
        """
        self._check_open()
        readiness = self._readiness
        if readiness.ready:  # an echo of an older probe would prove nothing about the hub now
            self._renew_probe()
        outbox = _outbox.outbox_for(self.settings)
        deadline = time.monotonic() + timeout
        interval = 0.01
        generation = self._receiver.generation
        while not readiness.ready:
            now = time.monotonic()
            if now >= deadline:
                return False
            if self._receiver.generation != generation:  # reconnected: echoes before prove
                generation = self._receiver.generation  # nothing about the server now
                self._renew_probe()
            readiness.needed = outbox.send_probe(readiness.probe)
            until = min(deadline, now + interval)
            with self._handover:
                while not readiness.ready and (remaining := until - time.monotonic()) > 0:
                    if self._handover.closed:
                        return False
                    frames = self._receiver.receive(remaining)
                    if frames is not None:
                        self._decoder.take(frames)
            # A secured hub that refused us would never echo: say why, within the timeout.
            if not readiness.ready:
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

        Args:
            block: wait for a message when none is there.
            timeout: with ``block``, seconds to wait at most; None waits for as long as
                it takes.

        Returns:
            The message (a JSON value), or None.

        Raises:
            ClosedError: the subscriber is closed.
        """
        pending = self._pending
        if pending and not self._handover.closed and self._plain:
            return pending.popleft()[3]  # what arrived goes out at once
        entry = self._next_entry(block, timeout)
        return None if entry is None else entry[3]

    def receive(self, block: bool = False, timeout: float | None = None) -> Message | None:
        """Like ``get()``, but the message comes in its envelope: a ``Message``.

        Returns:
            A ``Message`` (channel, message, sender, sequence), or None.

        Raises:
            ClosedError: the subscriber is closed.
        """
        entry = self._next_entry(block, timeout)
        return None if entry is None else _envelope(entry, self.settings)

    def __iter__(self) -> Iterator[Message]:
        """Yields messages as they arrive, until closed or ``general.switch`` is ``'off'``."""
        while not self._iteration_ends():
            entry = self._next_entry(True, SWITCH_INTERVAL, closing_ends=True)
            if entry is not None:
                yield _envelope(entry, self.settings)

    async def aget(self, timeout: float | None = None) -> Any:
        """Waits, without blocking the event loop, for the next message; None on timeout."""
        entry = await self._anext_entry(timeout)
        return None if entry is None else entry[3]

    async def areceive(self, timeout: float | None = None) -> Message | None:
        """Like ``aget()``, with the envelope: a ``Message``, or None on timeout."""
        entry = await self._anext_entry(timeout)
        return None if entry is None else _envelope(entry, self.settings)

    async def __aiter__(self) -> AsyncIterator[Message]:
        """Yields messages as they arrive, until closed or ``general.switch`` is ``'off'``."""
        while not self._iteration_ends():
            entry = await self._anext_entry(SWITCH_INTERVAL, closing_ends=True)
            if entry is not None:
                yield _envelope(entry, self.settings)

    def _iteration_ends(self) -> bool:
        """True once closed, or once the switch is off (read at most every SWITCH_INTERVAL)."""
        if self._handover.closed:
            return True
        now = time.monotonic()
        if now < self._next_switch_check:
            return False
        self._next_switch_check = now + SWITCH_INTERVAL
        return self.context.is_switched_off()

    def _next_entry(
        self, block: bool, timeout: float | None, closing_ends: bool = False
    ) -> Entry | None:
        handover = self._handover
        if handover.closed:
            if closing_ends:
                return None
            raise ClosedError("This subscriber was closed; make a new one with bus.subscribe()")
        acknowledgements = self._acknowledgements
        if acknowledgements is not None:
            acknowledgements.settle()  # the program asks for the next: it is past the one handed
        pending = self._pending
        if pending:
            return self._hand(pending.popleft())
        if not block:
            timeout = 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        receive = self._receiver.receive
        take = self._decoder.take
        grouped = self.group is not None
        with handover:
            while not handover.closed:  # seen here, a close() from elsewhere left the socket to us
                if grouped:  # a member takes its next share once done with the last
                    self._receiver.settle(len(pending))
                if deadline is None:
                    wait: float | None = WAIT_SLICE
                else:
                    wait = max(0.0, deadline - time.monotonic())
                frames = receive(wait)
                if frames is not None:
                    take(frames)
                    if len(pending) < DRAIN_BELOW:  # behind the stream: take what is queued
                        for more in self._receiver.receive_more():
                            take(more)
                            if len(pending) >= DRAIN_BELOW:
                                break
                    if acknowledgements is not None:
                        acknowledgements.settle()  # what came again, and nothing else: done with
                    if pending:
                        return self._hand(pending.popleft())
                    continue
                # Quiet: a secured hub taken over by one with another key says so here.
                refused = self._receiver.handshake_failure()
                if refused is not None:
                    raise AuthenticationError(refused)
                if handover.closed or (deadline is not None and time.monotonic() >= deadline):
                    return None
            return None

    async def _anext_entry(self, timeout: float | None, closing_ends: bool = False) -> Entry | None:
        # Messages are only taken in _next_entry, never across an await: a cancelled
        # wait leaves whatever arrived for the next call.
        handover = self._handover
        loop_deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            entry = self._next_entry(False, 0.0, closing_ends=closing_ends)
            if entry is not None or handover.closed:
                return entry
            remaining = None if loop_deadline is None else loop_deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            with handover:
                if handover.closed:
                    return None
                await self._receiver.wait_async(
                    WAIT_SLICE if remaining is None else min(remaining, WAIT_SLICE)
                )
            if handover.closed:  # during the wait: it ends with None, as get(block=True) does
                return None

    def _hand(self, entry: Entry) -> Entry:
        if self._acknowledgements is not None:
            self._acknowledgements.handed += 1
        if self.group is not None:  # credit goes back before the member runs dry
            self._receiver.settle(len(self._pending))
        return entry

    # -- life cycle ---------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """``received`` messages, ``dropped`` bad input, ``missed`` gaps in sequences;
        for a durable subscriber, ``duplicates``: messages the server delivered again,
        which the program was not handed twice."""
        return {**self._decoder.counters, **self._receiver.counters()}

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._handover.closed

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

        Args:
            forget: a durable subscriber's position is deleted on the server.

        Raises:
            ValueError: ``forget=True`` for a subscriber that is not durable.
            TransportError: the server could not delete the position.
        """
        if forget and self._acknowledgements is None:
            raise ValueError("close(forget=True) is for a durable subscriber (durable=...)")
        self._forget = forget
        if self._handover.closed:
            if forget:  # closed before: the position is forgotten now
                self._receiver.forget(FORGET_TIMEOUT)
            return
        if self._acknowledgements is not None and not self._handover.receiving:
            self._acknowledgements.close()
        # _pending is left alone (another thread may be taking from it); nothing reads it
        # once closed.
        self._handover.close(self._receiver.interrupt)

    def _free_receiver(self) -> None:
        if self.group is not None:  # what it never handed counts as lost where it was sent
            self._receiver.settle(len(self._pending))
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
        if exc_type is not None and self._acknowledgements is not None:
            # The program failed on the message in hand: it comes again.
            self._acknowledgements.handed = 0
        self.close()

    def _check_open(self) -> None:
        if self._handover.closed:
            raise ClosedError("This subscriber was closed; make a new one with bus.subscribe()")


def _envelope(entry: Entry, settings: BusSettings) -> Message:
    if len(entry) == 4:
        topic, sender, sequence, message = entry
        return Message(_codec.channel_of(topic), message, sender, sequence)
    topic, sender, sequence, message, reply_at = entry
    return Message(_codec.channel_of(topic), message, sender, sequence, Replier(settings, reply_at))
