"""What a started publisher does in its process: keep the bus up.

``HubKeeper.run()`` holds the hub when no one holds the address yet, or else relies
on the hub that does (and takes over if it goes away); a broker is a hub already
running, with nothing to hold. It confirms it reaches the hub with a probe of its
own, then waits for its stop pill, ``general.switch`` turning ``'off'`` (read at most
every ``SWITCH_INTERVAL`` seconds), SIGTERM, or, in a process of its own, its parent
gone. What it tells the process that started it goes through ``Shared``.
"""

from __future__ import annotations

import enum
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _codec, _outbox
from ._settings import BusSettings
from ._transports import transport_for
from ._transports.base import HUB_COUNTERS, Hub, HubKind, Receiver, Transport
from .context import Context
from .errors import AddressInUse, AuthenticationError, ShellbotError

SWITCH_INTERVAL = 0.1  # how often the process reads general.switch, in seconds
TAKEOVER_INTERVAL = 0.5  # how often a process without the hub tries to take the address


class HubState(enum.IntEnum):
    """What a publisher's process does, as its starter reads it (``Shared.state``)."""

    STARTING = 0
    HUB = 1  # it holds the hub of its address
    CLIENT = 2  # it relies on the hub of another process, or on a broker
    FAILED = -1  # it could not start: Shared.failure says why
    REFUSED = -2  # a secured hub refused its handshake: Shared.failure says why


class _Snapshot:
    def __init__(self, value: int) -> None:
        self.value = value


class Shared:
    """What a publisher's process tells the process that started it: whether it is
    ready, its ``HubState``, its hub's counters and why it failed. ``start()`` makes
    them in shared memory; a publisher that travels to another process takes a
    snapshot (``ready`` and ``failure`` None)."""

    def __init__(self, ready: Any, state: Any, stats: Any, failure: Any) -> None:
        self.ready = ready  # a multiprocessing.Event, set once ready or failed
        self.state = state  # a multiprocessing.Value of a HubState
        self.stats = stats  # a multiprocessing.Array of HUB_COUNTERS
        self.failure = failure  # a multiprocessing.Array of the error's text

    @classmethod
    def unstarted(cls) -> Shared:
        return cls(None, _Snapshot(HubState.STARTING), [0] * len(HUB_COUNTERS), None)

    @classmethod
    def for_start(cls) -> Shared:
        return cls(
            multiprocessing.Event(),
            multiprocessing.Value("i", HubState.STARTING, lock=False),
            multiprocessing.Array("q", len(HUB_COUNTERS), lock=False),
            multiprocessing.Array("c", 1024, lock=False),
        )

    def snapshot(self) -> Shared:
        """What travels: shared memory and locks stay in the process that made them."""
        return Shared(None, _Snapshot(self.state.value), list(self.stats), None)

    @property
    def hub_state(self) -> HubState:
        return HubState(self.state.value)

    def failed_with(self) -> str:
        return str(self.failure.value.decode("utf-8", "replace"))


class HubKeeper:
    """The loop of a publisher's process (or thread), until it is told to stop."""

    def __init__(
        self, settings: BusSettings, context: Context, publisher_id: str, shared: Shared
    ) -> None:
        self.settings = settings
        self.context = context
        self.shared = shared
        self.pill = _codec.PILL + publisher_id.encode()
        self.probe = _codec.PROBE + publisher_id.encode()
        self.stopping = threading.Event()

    def stop_on_signals(self) -> None:
        """In a process of its own: SIGTERM stops it, and Ctrl-C is not for it."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        # Ctrl-C in a terminal reaches the whole process group: it is for the program
        # that started us, which stops us with a pill at its exit (or we see it gone).
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def run(
        self,
        foreground: bool,
        in_child: bool,
        on_running: Callable[[], None] | None = None,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        """Holds or reaches the hub, then keeps it until told to stop.

        A failure to start is told to the starter through ``shared``; ``foreground``
        (``run()`` called directly) raises it instead. Once the hub is reached,
        ``on_running`` is called, and ``on_stopping`` as the loop ends (before the hub
        drains); ``in_child``, the loop also ends once the parent is gone.
        """
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
            control.subscribe(self.pill)
            control.subscribe(self.probe)
            hub = self._confirm(control, hub, transport if embedded else None)
        except ShellbotError as error:  # told to start(), which raises it in the caller
            if foreground:
                raise
            self.shared.failure.value = str(error).encode("utf-8")[:1023]
            refused = isinstance(error, AuthenticationError)
            self.shared.state.value = HubState.REFUSED if refused else HubState.FAILED
            self.shared.ready.set()
            if control is not None:
                control.close()
            if hub is not None:
                hub.close(0.0)
            return
        parent = os.getppid()
        try:
            if on_running is not None:
                on_running()
            next_switch = next_takeover = time.monotonic()
            while not self.stopping.is_set():
                frames = control.receive(SWITCH_INTERVAL)
                if frames is not None and frames[0] == self.pill:
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
                        self.shared.state.value = HubState.HUB
        finally:
            if on_stopping is not None:
                on_stopping()
            control.close()
            if hub is not None:
                hub.close(self.settings.drain_timeout)
                self._publish_stats(hub)

    def _confirm(
        self, control: Receiver, hub: Hub | None, embedded: Transport | None
    ) -> Hub | None:
        """Signals readiness once our own probe came back through the hub; returns the
        hub held. Meanwhile, on a hub we hold ourselves (``embedded``), it tries to hold
        it again now and then: a holder stopped by job control answers nothing, and is
        taken over once it has been stopped long enough."""
        outbox = _outbox.outbox_for(self.settings)
        interval = 0.01
        deadline = time.monotonic() + self.settings.start_timeout
        next_hold = time.monotonic() + TAKEOVER_INTERVAL
        while time.monotonic() < deadline:
            if hub is None and embedded is not None and time.monotonic() >= next_hold:
                next_hold = time.monotonic() + TAKEOVER_INTERVAL
                hub = embedded.open_hub()
            outbox.send_probe(self.probe)  # any copy back proves this process reaches the hub
            frames = control.receive(interval)
            if frames is not None and frames[0] == self.probe:
                self.shared.state.value = HubState.HUB if hub is not None else HubState.CLIENT
                if self.shared.ready is not None:  # None when run() was called directly
                    self.shared.ready.set()
                return hub
            # A secured hub that refused us would never echo: say why now, not at the timeout.
            refused = control.handshake_failure() or outbox.handshake_failure()
            if refused is not None:
                raise AuthenticationError(refused)
            interval = min(interval * 2, 0.2)
        return hub

    def _publish_stats(self, hub: Hub | None) -> None:
        if hub is not None:
            stats = hub.stats()
            for index, name in enumerate(HUB_COUNTERS):
                self.shared.stats[index] = stats.get(name, 0)
