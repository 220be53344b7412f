"""A bridge between the bus and the original shellbot's wire, for a fleet ported one
process at a time.

The original's wire: its one publisher binds a ZeroMQ PUB socket at its address and
sends each message as one frame, ``channel + ' ' + json.dumps(message)``; its
subscribers connect SUB sockets there and filter by channel prefix. So on the
original's address there is room for one publisher, and the bridge plays the part
that is free:

- while an original publisher holds the address, the bridge listens to it (a SUB
  socket) and puts what it hears on the bus;
- while no one holds it, the bridge binds it and sends the bus's messages there in
  the original's frame, byte for byte, for the original's subscribers. It tries
  again every ``BIND_INTERVAL`` seconds, so it takes over when the original
  publisher is ported.

Loops: what the bridge put on the bus comes back on its own subscription, and what
it sent on the original's address comes back on its own SUB socket once it holds
that address; both are skipped and counted (``looped``), never relayed again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from ._publishing import outbox as _outbox
from ._settings import redacted
from .errors import ShellbotError

if TYPE_CHECKING:
    from .bus import Bus, Publisher, Subscriber

BIND_INTERVAL = 1.0  # how often the bridge tries to bind the original's address
POLL_TIMEOUT = 0.1  # how long a loop waits before it looks at the stop event again

COUNTERS = (
    "into_bus",  # heard from the original's publisher, put on the bus
    "to_original",  # taken from the bus, sent to the original's subscribers
    "looped",  # the bridge's own messages, come back: skipped
    "held_back",  # from the bus while an original publisher holds the address
    "unreadable",  # frames from the original's side that are not 'channel json'
    "unsendable",  # bus messages the original's frame cannot carry (a space in the channel)
)


class LegacyBridge:
    """Relays between ``bus`` and the original's wire at ``legacy`` (``tcp://HOST:PORT``),
    on ``channels`` (exact names; empty for every channel)."""

    def __init__(self, bus: Bus, legacy: str, channels: list[str]) -> None:
        self.bus = bus
        self.legacy = legacy
        self.channels = frozenset(channels)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()
        self._holding = threading.Event()  # the bridge holds the original's address

    @property
    def holds_address(self) -> bool:
        return self._holding.is_set()

    def run(self, stop: threading.Event, report: Callable[[str], None]) -> None:
        """Relays both ways until ``stop`` is set; ``report`` hears each change of role."""
        publisher = self.bus.publish()
        publisher.start()
        context = zmq.Context()
        try:
            own = _outbox.outbox_for(publisher.settings).sender_id
            subscriber = self.bus.subscribe(sorted(self.channels) or [""])
            if not subscriber.wait_ready(publisher.settings.start_timeout):
                where = redacted(publisher.settings.address)
                raise ShellbotError(f"the bus at {where} did not confirm the subscription in time")
            listener = threading.Thread(
                target=self._into_bus,
                args=(context, publisher, stop),
                name="shellbot-bridge-in",
                daemon=True,
            )
            listener.start()
            try:
                self._to_original(context, subscriber, own, stop, report)
            finally:
                stop.set()
                listener.join(5.0)
                subscriber.close()
        finally:
            publisher.stop(timeout=publisher.settings.drain_timeout + 1.0)
            context.destroy(linger=0)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _into_bus(self, context: zmq.Context, publisher: Publisher, stop: threading.Event) -> None:
        """The original's publisher, heard and put on the bus."""
        socket = context.socket(zmq.SUB)
        socket.linger = 0
        socket.connect(self.legacy)
        for channel in sorted(self.channels) or [""]:
            socket.setsockopt_string(zmq.SUBSCRIBE, channel)  # a prefix: checked below
        try:
            while not stop.is_set():
                if not socket.poll(POLL_TIMEOUT * 1000):
                    continue
                frame = socket.recv()
                if self._holding.is_set():  # no one else can publish here now: our own
                    self._count("looped")
                    continue
                try:
                    channel, space, text = frame.decode("utf-8").partition(" ")
                    message = json.loads(text) if space else None
                except ValueError:  # not UTF-8, or not JSON after the channel
                    message = None
                if message is None or not channel:
                    self._count("unreadable")
                    continue
                if self.channels and channel not in self.channels:
                    continue  # the original's prefix filter let it through: not asked for
                publisher.put(channel, message)
                self._count("into_bus")
        finally:
            socket.close(linger=0)

    def _to_original(
        self,
        context: zmq.Context,
        subscriber: Subscriber,
        own: int,
        stop: threading.Event,
        report: Callable[[str], None],
    ) -> None:
        """The bus's messages, sent in the original's frame while the address is ours."""
        socket = context.socket(zmq.PUB)
        socket.linger = 0
        next_try = 0.0
        told_held = False
        try:
            while not stop.is_set():
                if not self._holding.is_set() and time.monotonic() >= next_try:
                    try:
                        socket.bind(self.legacy)
                    except zmq.ZMQError as error:
                        if error.errno != zmq.EADDRINUSE:
                            raise ShellbotError(
                                f"cannot bind the original's address {self.legacy}: {error}"
                            ) from error
                        next_try = time.monotonic() + BIND_INTERVAL
                        if not told_held:
                            told_held = True
                            report(
                                f"An original publisher holds {self.legacy}: its messages go "
                                "into the bus; the bus's reach the original's subscribers once "
                                "it is gone (the original allows one publisher per address)."
                            )
                    else:
                        self._holding.set()
                        report(f"Holding {self.legacy}: the original's subscribers hear the bus.")
                message = subscriber.receive(block=True, timeout=POLL_TIMEOUT)
                if message is None:
                    continue
                if message.sender == own:
                    self._count("looped")
                    continue
                if not self._holding.is_set():
                    self._count("held_back")
                    continue
                if " " in message.channel:
                    self._count("unsendable")
                    continue
                socket.send_string(f"{message.channel} {json.dumps(message.message)}")
                self._count("to_original")
        finally:
            socket.close(linger=0)

    def summary(self) -> str:
        with self._lock:
            counts = dict(self.counts)
        return (
            f"{counts['into_bus']} into the bus, {counts['to_original']} to the original's "
            f"subscribers, {counts['looped']} looped back (skipped), {counts['held_back']} held "
            f"back (an original publisher held the address), {counts['unreadable']} unreadable, "
            f"{counts['unsendable']} unsendable (a space in the channel)"
        )
