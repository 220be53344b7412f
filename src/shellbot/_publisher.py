"""The publisher: a process that keeps the bus up, and a ``put()`` that needs none.

``put()`` runs in the caller: it validates, encodes and hands bytes to the
process's outbox (see ``_outbox``), started or not. The process started by
``start()`` holds the hub when no one holds the address yet, or else relies on
the hub that does (and takes over if it goes away). It stops when
``general.switch`` turns ``'off'`` (read at most every ``SWITCH_INTERVAL``
seconds), on a pill sent by ``fan.put(None)`` or ``stop()`` (a pill put before
``start()`` is kept, and sent once the process runs), or on SIGTERM; while
stopping, its hub forwards what is still arriving, for at most
``bus.drain_timeout`` seconds. ``run()`` called directly does the same in the
caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import threading
import time
from typing import Any

import orjson

from . import _codec, _outbox
from ._settings import BusSettings, as_context
from ._transports import transport_for
from ._transports.base import HUB_COUNTERS, Hub, HubKind, Receiver
from .context import Context
from .errors import AddressInUse, AuthenticationError, ShellbotError, TimeoutError, TransportError

log = logging.getLogger("shellbot.bus")

SWITCH_INTERVAL = 0.1  # how often the process reads general.switch, in seconds
TAKEOVER_INTERVAL = 0.5  # how often a process without the hub tries to take the address
_STATE_HUB, _STATE_CLIENT, _STATE_FAILED, _STATE_REFUSED = 1, 2, -1, -2
# Guards a publisher's kept pills against a run() that begins in another thread.
_pills_lock = threading.Lock()


class _Snapshot:
    def __init__(self, value: int) -> None:
        self.value = value


class Fan:
    """The original's queue into the publisher, kept for compatibility.

    ``fan.put(None)`` stops the publisher after every message this process put
    before; ``fan.put(item)`` publishes a serialized ``(channel, message)`` pair.
    """

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._publisher._send_pill()
        else:
            self._publisher.process(item)


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

    def __init__(self, context: Context | str | None = None) -> None:
        super().__init__(daemon=True)
        self.context = as_context(context, "Publisher()")
        self.settings = BusSettings.from_context(self.context)
        transport_for(self.settings).check_storage()  # bus.durable where nothing is stored
        self.publisher_id = secrets.token_hex(8)
        self.fan = Fan(self)
        # Made by start(), so an unstarted publisher can travel to any process.
        self._ready: Any = None
        self._state: Any = _Snapshot(0)
        self._stats: Any = [0] * len(HUB_COUNTERS)
        self._failure: Any = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._pills = 0  # pills put before start() or run(): see _send_kept_pill()
        self._running_here = False  # run() called directly is past its readiness

    # -- in the caller's process ------------------------------------------------

    def put(self, channels: str | list[str], message: Any) -> None:
        """Publishes ``message`` on each of ``channels``.

        Raises ``ValueError`` or ``TypeError`` at once for no channel, a channel
        that is not a str, a ``None`` message or a value JSON cannot encode; then
        nothing is queued. The message leaves when a hub is up: before
        ``start()``, it waits in this process.
        """
        _outbox.outbox_for(self.settings).put(channels, message)

    def process(self, item: str | bytes) -> None:
        """Publishes an item serialized as JSON ``[channel, message]``."""
        try:
            channel, message = orjson.loads(item)
        except (orjson.JSONDecodeError, TypeError, ValueError) as error:
            raise _codec.MessageError(
                f"process() takes the JSON text of [channel, message]; got {item!r:.80}"
            ) from error
        self.put(channel, message)

    def start(self) -> None:
        """Starts the process and returns once it holds or reaches the hub."""
        if self._started:
            raise RuntimeError("A publisher can be started once; make a new one with bus.publish()")
        self._started = True
        self._ready = multiprocessing.Event()
        self._state = multiprocessing.Value("i", 0, lock=False)
        self._stats = multiprocessing.Array("q", len(HUB_COUNTERS), lock=False)
        self._failure = multiprocessing.Array("c", 1024, lock=False)
        transport = transport_for(self.settings)
        if transport.process_local:
            self._thread = threading.Thread(target=self.run, name="shellbot-publisher", daemon=True)
            self._thread.start()
        else:
            super().start()
        _outbox.stop_at_exit(id(self), self._stop_at_exit)
        ready = self._ready.wait(self.settings.start_timeout)
        if self._state.value in (_STATE_FAILED, _STATE_REFUSED):
            self.join(1.0)
            failed = AuthenticationError if self._state.value == _STATE_REFUSED else TransportError
            raise failed(self._failure.value.decode("utf-8", "replace"))
        if not ready:
            self.terminate()
            raise TimeoutError(transport.unreachable())
        self._send_kept_pill(running_here=False)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stops the process after what this process put was forwarded; True once it is gone.

        On a durable bus (``bus.durable``), first waits, within ``timeout``, until the
        server stored every message this process put: False, with a warning saying
        how many, when some were not confirmed stored (``stats['unconfirmed']``,
        ``stats['not_stored']``)."""
        stored = True
        if self.settings.durable:
            deadline = time.monotonic() + timeout
            outbox = _outbox.existing_outbox(self.settings)
            left = outbox.wait_confirmed(timeout) if outbox is not None else 0
            if left:
                stored = False
                log.warning(
                    "stop(): %d messages put were not confirmed stored within %g s",
                    left,
                    timeout,
                )
            timeout = max(0.5, deadline - time.monotonic())
        return self._stop_process(timeout) and stored

    def _stop_process(self, timeout: float) -> bool:
        if not self._started:
            return True
        if self.is_alive():
            self._send_pill()
            self.join(timeout)
        if self.is_alive() and self._thread is None:
            self.terminate()
            self.join(1.0)
        _outbox.stop_at_exit(id(self), None)
        return not self.is_alive()

    @property
    def holds_hub(self) -> bool:
        """True when this publisher's process holds the hub of its address."""
        return self._state.value == _STATE_HUB

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
        ``unconfirmed`` (waiting for the server now)."""
        stats = dict(zip(HUB_COUNTERS, self._stats, strict=True))
        if self.settings.durable:
            stats.update(_outbox.outbox_for(self.settings).counters())  # zeros before a put
        return stats

    def is_alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return self._process_handle is not None and super().is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._process_handle is not None:
            super().join(timeout)

    def terminate(self) -> None:
        if self._thread is None and self._process_handle is not None:
            super().terminate()

    # multiprocessing's own attributes, read through typed names.
    @property
    def _process_handle(self) -> Any:
        return getattr(self, "_popen", None)

    @property
    def _started_by(self) -> int | None:
        return getattr(self, "_parent_pid", None)

    def _send_pill(self) -> None:
        if not self._started:
            with _pills_lock:
                if not self._running_here:  # no control socket would take it yet
                    self._pills += 1
                    return
        else:
            started_here = self._thread is not None or self._started_by == os.getpid()
            if started_here and not self.is_alive():
                return  # its hub may be gone with it: there would be no one to take the pill
        # From another process (forked after start), we cannot tell: a pill to a
        # publisher that is gone reaches no one, which is harmless.
        _outbox.outbox_for(self.settings).send_control(_codec.PILL + self.publisher_id.encode())

    def _send_kept_pill(self, running_here: bool) -> None:
        """Sends the pill put before start() or run(), once the control socket is live.

        It leaves from here, through this process's outbox, as the messages put before
        it did: they wait in that one socket, in order, until a hub takes them, so the
        pill reaches the running publisher after them. The publisher's process could
        not keep that order itself (after a fork or spawn it sees none of our
        messages), nor could the pill be sent when put: no control socket took it yet.
        Messages put between the pill and start() leave before it too.
        """
        with _pills_lock:
            kept, self._pills = self._pills, 0
            self._running_here = running_here
        if kept:
            _outbox.outbox_for(self.settings).send_control(_codec.PILL + self.publisher_id.encode())

    def _stop_at_exit(self) -> None:
        self.stop(timeout=self.settings.drain_timeout + 1.0)

    def __getstate__(self) -> dict[str, Any]:
        """Lets a publisher travel to another process, where ``put()`` and
        ``fan.put(None)`` work; only the process that started it can join it."""
        state = self.__dict__.copy()
        if self._process_handle is None and self._thread is None:
            return state  # not started yet, or being started: its process gets everything
        state["_popen"] = None
        state["_thread"] = None
        # Shared memory and locks of the starting process stay there: a snapshot travels.
        state["_ready"] = None
        state["_state"] = _Snapshot(self._state.value)
        state["_stats"] = list(self._stats)
        state["_failure"] = None
        return state

    # -- in the publisher's process ----------------------------------------------

    def run(self) -> None:
        """Keeps the bus up until the switch turns off, a pill arrives or SIGTERM.

        ``start()`` runs it in the publisher's process (or thread). Called directly, as
        a ``multiprocessing.Process`` may be, it runs in the caller, holding or using
        the hub as ``start()`` would, and returns once the switch is off or a pill
        arrives (one put before the call included).
        """
        stopping = threading.Event()
        foreground = not self._started
        in_child = not foreground and self._thread is None
        if in_child:
            signal.signal(signal.SIGTERM, lambda *_: stopping.set())
            # Ctrl-C in a terminal reaches the whole process group: it is for the program
            # that started us, which stops us with a pill at its exit (or we see it gone).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        transport = transport_for(self.settings)
        # A broker is a hub already running: there is none to hold or take over.
        embedded = transport.hub_kind is HubKind.EMBEDDED
        control: Receiver | None = None
        hub: Hub | None = None
        try:
            hub = transport.open_hub() if embedded else None
            # Something that is not a hub holds the address: say so now, not at the timeout.
            if embedded and hub is None and (foreign := transport.not_a_hub()) is not None:
                raise AddressInUse(foreign)
            control = transport.open_receiver()
            pill = _codec.PILL + self.publisher_id.encode()
            probe = _codec.PROBE + self.publisher_id.encode()
            control.subscribe(pill)
            control.subscribe(probe)
            self._confirm(control, probe, hub)
        except ShellbotError as error:  # told to start(), which raises it in the caller
            if foreground:
                raise
            self._failure.value = str(error).encode("utf-8")[:1023]
            refused = isinstance(error, AuthenticationError)
            self._state.value = _STATE_REFUSED if refused else _STATE_FAILED
            self._ready.set()
            if control is not None:
                control.close()
            if hub is not None:
                hub.close(0.0)
            return
        parent = os.getppid()
        try:
            if foreground:
                self._send_kept_pill(running_here=True)
            next_switch = next_takeover = time.monotonic()
            while not stopping.is_set():
                frames = control.receive(SWITCH_INTERVAL)
                if frames is not None and frames[0] == pill:
                    break
                now = time.monotonic()
                if now >= next_switch:
                    next_switch = now + SWITCH_INTERVAL
                    orphaned = in_child and os.getppid() != parent
                    if orphaned or self.context.is_switched_off():
                        break
                    self._publish_stats(hub)
                if embedded and hub is None and now >= next_takeover:
                    next_takeover = now + TAKEOVER_INTERVAL
                    hub = transport.open_hub()
                    if hub is not None:
                        self._state.value = _STATE_HUB
        finally:
            if foreground:
                with _pills_lock:
                    self._running_here = False
            control.close()
            if hub is not None:
                hub.close(self.settings.drain_timeout)
                self._publish_stats(hub)

    def _confirm(self, control: Receiver, probe: bytes, hub: Hub | None) -> None:
        """Signals readiness once our own probe came back through the hub."""
        outbox = _outbox.outbox_for(self.settings)
        interval = 0.01
        deadline = time.monotonic() + self.settings.start_timeout
        while time.monotonic() < deadline:
            outbox.send_probe(probe)  # any copy back proves this process reaches the hub
            frames = control.receive(interval)
            if frames is not None and frames[0] == probe:
                self._state.value = _STATE_HUB if hub is not None else _STATE_CLIENT
                if self._ready is not None:  # None when run() was called directly
                    self._ready.set()
                return
            # A secured hub that refused us would never echo: say why now, not at the timeout.
            refused = control.handshake_failure() or outbox.handshake_failure()
            if refused is not None:
                raise AuthenticationError(refused)
            interval = min(interval * 2, 0.2)

    def _publish_stats(self, hub: Hub | None) -> None:
        if hub is not None:
            stats = hub.stats()
            for index, name in enumerate(HUB_COUNTERS):
                self._stats[index] = stats.get(name, 0)


def _forget_after_fork() -> None:
    global _pills_lock
    _pills_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
