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
import os
import signal
import threading
import time
from collections.abc import Callable

from .. import _codec
from .._settings import BusSettings
from .._transports import Hub, HubKind, Receiver, Transport, transport_for
from ..context import Context
from ..errors import AddressInUse, AuthenticationError, ShellbotError
from . import outbox as _outbox
from .state import HubState, Shared

SWITCH_INTERVAL = 0.1  # how often the process reads general.switch, in seconds
TAKEOVER_INTERVAL = 0.5  # how often a process without the hub tries to take the address


class Mode(enum.Enum):
    """Where ``HubKeeper.run()`` runs, which decides how it ends and how it fails."""

    FOREGROUND = "foreground"  # run() called directly: a failure to start is raised
    THREAD = "thread"  # start() on a process-local transport: a thread of the starter
    CHILD = "child"  # start(): a process of its own, which SIGTERM or its parent gone ends


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

    def _stop_on_signals(self) -> None:
        """In a process of its own: SIGTERM stops it, and Ctrl-C is not for it."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        # Ctrl-C in a terminal reaches the whole process group: it is for the program
        # that started us, which stops us with a pill at its exit (or we see it gone).
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def run(
        self,
        mode: Mode,
        on_running: Callable[[], None] | None = None,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        """Holds or reaches the hub, then keeps it until told to stop.

        A failure to start is told to the starter through ``shared``; in the foreground
        it is raised instead. Once the hub is reached, ``on_running`` is called, and
        ``on_stopping`` as the loop ends (before the hub drains). In a child, SIGTERM
        ends the loop, and so does the parent gone.
        """
        in_child = mode is Mode.CHILD
        if in_child:
            self._stop_on_signals()
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
            if mode is Mode.FOREGROUND:
                raise
            self.shared.tell_failure(str(error), refused=isinstance(error, AuthenticationError))
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
                        self.shared.tell_state(HubState.HUB)
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
                self.shared.tell_state(HubState.HUB if hub is not None else HubState.CLIENT)
                self.shared.tell_ready()
                return hub
            # A secured hub that refused us would never echo: say why now, not at the timeout.
            refused = control.handshake_failure() or outbox.handshake_failure()
            if refused is not None:
                raise AuthenticationError(refused)
            interval = min(interval * 2, 0.2)
        return hub

    def _publish_stats(self, hub: Hub | None) -> None:
        if hub is not None:
            self.shared.tell_stats(hub.stats())
