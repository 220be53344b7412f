"""``nats://``: the bus on a NATS server or cluster, which is the hub already running.

The frames are the bus's own (``_codec``): a channel's topic travels as a NATS
subject, the body (sender id, sequence number, JSON) as the payload, so gaps
are counted exactly as on ZeroMQ. The naming rule is in ``Naming``.

One connection per process and address, its asyncio loop in a thread of its
own (``_Connection``). ``put()`` never waits for that loop: the sender appends
frames to a queue and wakes the loop once per burst; the loop publishes what is
queued, joining consecutive messages of one channel into one payload (the same
runs as the ZeroMQ hub makes, split again by the subscriber), so that under a
backlog a NATS message carries many, and a message alone leaves at once. While
no server is connected, frames wait in that queue (up to
``bus.send_high_water_mark``, then ``put()`` waits up to ``bus.send_timeout``).

Readiness is end to end: on a cluster, a subscription reaches the other nodes
after the server that took it answered, so a probe comes back from every node
(``Sender.send_probe``), each through a short connection of its own to that
node, before ``wait_ready()`` says True.
"""

from __future__ import annotations

import threading

from ..._settings import BusSettings, redacted
from ...errors import ConfigurationError  # the name errors is this package's map (.errors)
from ..base import Hub, HubKind, Receiver, Sender, Transport

try:  # first, so that a missing extra is said before anything else fails
    import nats  # noqa: F401
except ImportError as missing:  # the optional extra
    raise ConfigurationError(
        "A nats:// bus.address needs the NATS client, nats-py, which is not installed: "
        "install shellbot's nats extra (from its checkout: pip install '.[nats]')"
    ) from missing

# After the extra's check:
from .connection import _Connection
from .jetstream.durable import DurableReceiver
from .jetstream.work import WorkReceiver
from .naming import Naming, decode_token, encode_token
from .receiver import NatsReceiver
from .sender import NatsSender


class NatsTransport(Transport):
    hub_kind = HubKind.BROKER
    broker_name = "a NATS server"
    stores_messages = True  # with JetStream on the server, which the stream's use checks

    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.naming = Naming(settings.nats_prefix)
        self._connection: _Connection | None = None
        self._lock = threading.Lock()

    @property
    def connection(self) -> _Connection:
        """This process's connection, made on first use."""
        with self._lock:
            if self._connection is None:
                self._connection = _Connection(self.settings, self.naming)
            return self._connection

    def open_sender(self) -> Sender:
        return NatsSender(self.connection)

    def open_receiver(self, durable: str | None = None, group: str | None = None) -> Receiver:
        if durable is not None and group is not None:
            return WorkReceiver(self.connection, durable)
        if durable is not None:
            return DurableReceiver(self.connection, durable)
        return NatsReceiver(self.connection, group=group)

    def open_hub(self) -> Hub | None:
        return None  # the server is the hub

    def unreachable(self) -> str:
        # What this process's connection learnt, if it has one: the message makes none.
        connection = self._connection
        if connection is not None and connection.failure is not None:
            return str(connection.failure)
        last = connection.last_error if connection is not None else None
        why = f" (last: {last})" if last else ""
        return (
            f"No NATS server answered at {redacted(self.settings.address)} within "
            f"{self.settings.start_timeout:g} s (bus.start_timeout){why}: check bus.address, "
            "and that nats-server runs there"
        )


__all__ = ["Naming", "NatsTransport", "decode_token", "encode_token"]
