"""The publisher: a process that keeps the bus up, and a ``put()`` that needs none.

``put()`` runs in the caller: it validates, encodes and hands bytes to the
process's outbox (see ``outbox``), started or not. ``start()`` runs the publisher
in a process of its own, or in a thread where the transport's hub lives in one
process (``runner``); there, ``run()`` keeps the bus up (``keeper``): it holds
the hub when no one holds the address yet, or else relies on the hub that does
(and takes over if it goes away). It stops when ``general.switch`` turns ``'off'``,
on a pill sent by ``fan.put(None)`` or ``stop()`` (a pill put before ``start()`` is
kept, and sent once the process runs), or on SIGTERM; while stopping, its hub
forwards what is still arriving, for at most ``bus.drain_timeout`` seconds.
``run()`` called directly does the same in the caller. Its phase, and the pills
kept until it runs, are its ``Life`` (``state``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from .. import _codec
from .._settings import BusSettings, as_context, redacted
from .._transports import transport_for
from ..context import Context
from ..errors import AuthenticationError, TimeoutError, TransportError
from . import outbox as _outbox
from .keeper import HubKeeper, Mode
from .runner import ProcessRunner, Runner, ThreadRunner
from .state import HubState, Life, Phase, Shared

log = logging.getLogger("shellbot.bus")


class Fan:
    """The original's queue into the publisher, kept for compatibility.

    ``fan.put(None)`` stops the publisher after every message this process put
    before; ``fan.put(item)`` hands an item (the original's ``'channel json'``, or
    the JSON of ``[channel, message]``) to ``process()``. Nothing waits in it:
    ``put()`` hands messages to the process's socket at once, so ``empty()`` is
    always True and ``qsize()`` 0 (``stop()`` waits for what is on its way).
    """

    def __init__(self, publisher: Publisher, send_pill: Callable[[], None]) -> None:
        self._publisher = publisher
        self._send_pill = send_pill

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._send_pill()
        else:
            self._publisher.process(item)

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0


class Publisher(multiprocessing.Process):
    """Publishes messages on channels; started, it also keeps the bus up.

    Example::

        publisher = bus.publish()
        publisher.start()
        publisher.put('direct-1', {'question': 'lunch?'})
        context.set('general.switch', 'off')   # or publisher.stop()
    """

    DEFER_DURATION = 0.3  # kept from the original API; the bus waits for readiness instead
    EMPTY_DELAY = 0.005  # kept from the original API; nothing polls on an empty queue
    # Kept from the original API, where tests injected a socket: the bus's sockets are
    # its transport's, per process, and nothing reads this one.
    socket: None = None

    def __init__(self, context: Context | str | None = None) -> None:
        super().__init__(daemon=True)
        self.context = as_context(context, "Publisher()")
        self.settings = BusSettings.from_context(self.context)
        transport_for(self.settings).check_storage()  # bus.durable where nothing is stored
        self.publisher_id = secrets.token_hex(8)
        self.fan = Fan(self, self._send_pill)
        self._life = Life()
        # Shared memory is made by start(), so an unstarted publisher can travel to any process.
        self._shared = Shared.unstarted()
        self._runner: Runner | None = None  # made by start(); it stays in this process
        # What this process had put on the address before: publisher.counter counts from here.
        before = _outbox.existing_outbox(self.settings)
        self._sent_before = before.sent() if before is not None else 0
        # A subclass that overrides process() sees each message, as the original's did.
        self._process_overridden = type(self).process is not Publisher.process

    # -- in the caller's process ------------------------------------------------

    def put(self, channels: str | list[str], message: Any) -> None:
        """Publishes ``message`` on each of ``channels``.

        Raises ``ValueError`` or ``TypeError`` at once for no channel, a channel
        that is not a str, a ``None`` message or a value JSON cannot encode; then
        nothing is queued. The message leaves when a hub is up: before
        ``start()``, it waits in this process. A subclass that overrides
        ``process()`` has it called here, in the caller, once per channel with the
        original's item ``'channel json'``.

        Args:
            channels: a channel, or a list of them: published once on each.
            message: any JSON value but ``None``.

        Raises:
            ValueError: no channel, a ``None`` message, NaN or infinities
                (``MessageError``), or one over ``bus.max_message_size`` (``MessageTooLarge``).
            TypeError: a channel that is not a str, or a value JSON cannot encode.
            TimeoutError: no hub took the messages held (``bus.send_high_water_mark``)
                within ``bus.send_timeout``.
        """
        if self._process_overridden:
            names = _codec.check_channels(channels)
            _codec.encode(message, self.settings.max_message_size)  # refused here, as put()
            text = json.dumps(message)
            for name in names:
                self.process(f"{name} {text}")
            return
        _outbox.outbox_for(self.settings).put(channels, message)

    def process(self, item: str | bytes) -> None:
        """Publishes one item: the original's ``'channel json'`` (the channel ends at
        the first space), or the JSON text of ``[channel, message]``."""
        channel, message = _parse_item(item)
        _outbox.outbox_for(self.settings).put(channel, message)

    def start(self) -> None:
        """Starts the process and returns once it holds or reaches the hub.

        Raises:
            RuntimeError: it was started before.
            TimeoutError: no hub held or reached within ``bus.start_timeout``.
            TransportError: the address cannot be held or reached (``AddressInUse``: held
                by a program that is not a hub).
            AuthenticationError: a secured hub refused this process.
        """
        if self._life.started:
            raise RuntimeError("A publisher can be started once; make a new one with bus.publish()")
        transport = transport_for(self.settings)
        transport.check()  # settings it cannot use: raised here as what they are
        self._life.begin_start()
        # Settings changed in the context since bus.publish() count, as in the original.
        self.settings = BusSettings.from_context(self.context)
        transport_for(self.settings).check_storage()
        self._shared = shared = Shared.for_start()
        runner = ThreadRunner(self.run) if transport.process_local else ProcessRunner(self)
        self._runner = runner
        runner.start()
        self._life.launched()
        _outbox.stop_at_exit(id(self), self._stop_at_exit)
        ready = shared.wait_ready(self.settings.start_timeout)
        state = shared.hub_state
        if state in (HubState.FAILED, HubState.REFUSED):
            self.join(1.0)
            failed = AuthenticationError if state is HubState.REFUSED else TransportError
            raise failed(shared.failed_with())
        if not ready:
            self.terminate()
            raise TimeoutError(transport.unreachable())
        self._send_kept_pills(running_here=False)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stops the process after what this process put was forwarded; True once it is gone.

        On a durable bus (``bus.durable``), first waits, within ``timeout``, until the
        server stored every message this process put: False, with a warning saying
        how many, when some were not confirmed stored (``stats['unconfirmed']``,
        ``stats['not_stored']``). On NATS, raises ``TransportError`` (once the process
        stopped) when the server closed the connection since the last put().

        Args:
            timeout: seconds to wait, at most, for what was put to leave and be stored.

        Returns:
            True once the process is gone (and, on a durable bus, everything was stored).
        """
        stored = True
        deadline = time.monotonic() + timeout
        outbox = _outbox.existing_outbox(self.settings)
        try:
            # On NATS, what was put reaches the server first, and a connection it closed
            # meanwhile (the next put() would say so) is raised, once stopped.
            left = outbox.wait_confirmed(timeout) if outbox is not None else 0
        except TransportError:
            self._stop_process(timeout)
            self._write_counter()
            raise
        if left:  # on a durable bus only
            stored = False
            log.warning(
                "stop(): %d messages put were not confirmed stored within %g s",
                left,
                timeout,
            )
        # Given up earlier (bus.send_timeout passed): not confirmed stored either.
        given_up = outbox.counters().get("not_stored", 0) if outbox is not None else 0
        if given_up:
            stored = False
            log.warning("stop(): %d messages put were given up, not stored", given_up)
        timeout = max(0.5, deadline - time.monotonic())
        stopped = self._stop_process(timeout)
        self._write_counter()
        return stopped and stored

    def _stop_process(self, timeout: float) -> bool:
        if not self._life.started:
            return True
        if self.is_alive():
            self._send_pill()
            self.join(timeout)
        if self.is_alive() and not self._runner_in_thread:
            self.terminate()
            self.join(1.0)
        _outbox.stop_at_exit(id(self), None)
        return not self.is_alive()

    @property
    def holds_hub(self) -> bool:
        """True when this publisher's process holds the hub of its address."""
        return self._shared.hub_state is HubState.HUB

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the hub this process holds (zeros when it holds none).

        The process refreshes them every ``SWITCH_INTERVAL`` (0.1 s), and once more as
        it stops: right after traffic they may lag by that much; after ``stop()`` they
        are final.

        On a durable bus, also what storing the messages this process put counted:
        ``stored`` (acknowledged by the server), ``retried`` (published again for want
        of an acknowledgement), ``duplicates`` (acknowledged as stored already: the
        first acknowledgement was lost), ``not_stored`` (given up after ``bus.send_timeout``) and
        ``unconfirmed`` (waiting for the server now).

        On NATS, where the server is the hub, ``oversized`` counts the messages this
        process put before the server's max_payload was known, and over it: not sent."""
        stats = self._shared.hub_stats()
        if self.settings.durable:
            stats.update(_outbox.outbox_for(self.settings).counters())  # zeros before a put
        elif (outbox := _outbox.existing_outbox(self.settings)) is not None:
            stats.update(outbox.counters())
        return stats

    def is_alive(self) -> bool:
        """True while the started process (or thread, on ``memory://`` and ``inproc://``) runs."""
        return self._runner is not None and self._runner.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Waits until the process ends, at most ``timeout`` seconds when given; then
        writes ``publisher.counter`` in the context, as the original did."""
        if self._runner is not None:
            self._runner.join(timeout)
            if not self._runner.is_alive():
                self._write_counter()

    def _write_counter(self) -> None:
        """Writes ``publisher.counter`` in the context, as the original did: how many
        messages this process put on the address since this publisher was made. Once,
        when the publisher stops, never per message."""
        outbox = _outbox.existing_outbox(self.settings)
        sent = outbox.sent() - self._sent_before if outbox is not None else 0
        with contextlib.suppress(OSError, EOFError, ConnectionError):  # the context is gone
            self.context.set("publisher.counter", max(0, sent))

    def terminate(self) -> None:
        """SIGTERM to the started process, which stops as on a pill (a thread, on
        ``memory://`` and ``inproc://``, ends only on a pill or the switch)."""
        if self._runner is not None:
            self._runner.terminate()

    @property
    def _runner_in_thread(self) -> bool:
        return self._runner is not None and self._runner.in_thread

    def _send_pill(self) -> None:
        if not self._life.started:
            if self._life.keep_pill():  # no control socket would take it yet
                return
        else:
            started_here = self._runner is not None and self._runner.started_here()
            if started_here and not self.is_alive():
                return  # its hub may be gone with it: there would be no one to take the pill
        # From another process (forked after start), we cannot tell: a pill to a
        # publisher that is gone reaches no one, which is harmless.
        _outbox.outbox_for(self.settings).send_control(_codec.PILL + self.publisher_id.encode())

    def _send_kept_pills(self, running_here: bool) -> None:
        """Sends the pill put before start() or run(), once the control socket is live.

        It leaves from here, through this process's outbox, as the messages put before
        it did: they wait in that one socket, in order, until a hub takes them, so the
        pill reaches the running publisher after them. The publisher's process could
        not keep that order itself (after a fork or spawn it sees none of our
        messages), nor could the pill be sent when put: no control socket took it yet.
        Messages put between the pill and start() leave before it too.
        """
        if self._life.running(here=running_here):
            _outbox.outbox_for(self.settings).send_control(_codec.PILL + self.publisher_id.encode())

    def _stop_at_exit(self) -> None:
        self.stop(timeout=self.settings.drain_timeout + 1.0)

    def __getstate__(self) -> dict[str, Any]:
        """Lets a publisher travel to another process, where ``put()`` and
        ``fan.put(None)`` work; only the process that started it can join it."""
        state = self.__dict__.copy()
        state["_runner"] = None
        if self._life.phase is not Phase.STARTED:
            return state  # not started yet, or being started: its process gets everything
        state["_popen"] = None  # multiprocessing's handle of the process: only here
        state["_shared"] = self._shared.snapshot()
        return state

    # -- in the publisher's process ----------------------------------------------

    def run(self) -> None:
        """Keeps the bus up until the switch turns off, a pill arrives or SIGTERM.

        ``start()`` runs it in the publisher's process (or thread). Called directly, as
        a ``multiprocessing.Process`` may be, it runs in the caller, holding or using
        the hub as ``start()`` would, and returns once the switch is off or a pill
        arrives (one put before the call included).
        """
        if not self._life.started:
            mode = Mode.FOREGROUND
        else:
            mode = Mode.THREAD if self._runner_in_thread else Mode.CHILD
        keeper = HubKeeper(self.settings, self.context, self.publisher_id, self._shared)
        log.info("Starting publisher at %s", redacted(self.settings.address))
        if mode is Mode.FOREGROUND:  # a pill put meanwhile stops this run, or is kept for the next
            keeper.run(
                mode,
                on_running=self._running_here_now,
                on_stopping=self._life.no_longer_running_here,
            )
            self._write_counter()
        else:
            keeper.run(mode)
        log.info("Publisher has been stopped")

    def _running_here_now(self) -> None:
        self._send_kept_pills(running_here=True)


def _parse_item(item: str | bytes) -> tuple[Any, Any]:
    """The channel and message of an item given to ``process()``."""
    text = item.decode() if isinstance(item, (bytes, bytearray)) else item
    if not isinstance(text, str):
        raise TypeError(f"process() takes a str item; it got {type(item).__name__}")
    if text.startswith("["):
        try:
            pair = orjson.loads(text)
        except orjson.JSONDecodeError:
            pair = None
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
            return pair[0], pair[1]
    channel, space, message = text.partition(" ")
    if not space:
        raise _codec.MessageError(
            "process() takes the original's item 'channel json' or the JSON text of "
            f"[channel, message]; got {text!r:.80}"
        )
    try:
        return channel, json.loads(message)
    except ValueError as error:
        raise _codec.MessageError(
            f"process(): what follows the channel is not JSON: {message!r:.80}"
        ) from error
