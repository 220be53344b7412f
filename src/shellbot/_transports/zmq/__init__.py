"""``tcp://``, ``ipc://`` and ``inproc://``: the embedded ZeroMQ transport.

The hub binds two sockets:

- an XPUB socket at ``bus.address``, where subscribers connect SUB sockets;
- a PULL socket at the inbound address, where every process connects one PUSH
  socket to publish. The inbound address is ``bus.inbound`` when set, else
  derived from ``bus.address``: TCP port + 1 (``tcp://127.0.0.1:5556`` for the
  default), or the same path or name with ``.in`` appended for ``ipc://`` and
  ``inproc://``.

A PUSH socket may connect before any hub exists: what it sends waits in the
socket (up to ``bus.send_high_water_mark`` messages) until a hub binds. The hub
checks the shape of each message (two frames, a topic that ends with the
terminator or is a control topic, a body with a header, a size within
``bus.max_message_size``), counts and drops the rest, and forwards the bytes
as they are; it never decodes JSON.

On the inbound side only, a message may also come as one frame: the topic and
the body back to back (the topic's terminator, the first 0xFF byte, ends it).
Our publishers send messages that way, one frame being cheaper than two at
both ends; bus signals and other programs use the two frames. Under a backlog
the hub joins runs of messages (``_transports/_runs.py``); it never waits to
do so.

The package imports one way: a module only from those after it here. This
module, the transport; ``member`` (a queue group's receiver); ``endpoints``
(sender, receiver, the one map of ZeroMQ's errors); ``hub`` (binding, the
loop); ``routing`` (routes, batches); ``shares`` (the hub's queue groups);
``requests``; ``curve`` and ``curve_folder``; ``handover`` (a clean stop);
``takeover``; ``zmtp`` (the greeting probe); and ``sockets``, what the
endpoints and the hub share (tests/test_zmq_layout.py holds the order).
"""

from __future__ import annotations

import zmq

from ... import errors
from ..._settings import BusSettings
from ..base import Hub, Receiver, Sender, Transport
from . import zmtp
from .curve import curve_of, holding_refused
from .endpoints import ZmqReceiver, ZmqSender
from .hub import open_hub as _open_hub
from .member import ZmqMemberReceiver
from .sockets import connect_address, inbound_address
from .takeover import StoppedHolder

__all__ = ["ZmqTransport"]


class ZmqTransport(Transport):
    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.process_local = settings.scheme == "inproc"
        self._context: zmq.Context = zmq.Context.instance()
        self._stopped_holder: StoppedHolder | None = None

    def open_sender(self) -> Sender:
        self.check_storage()
        return ZmqSender(self._context, self.settings)

    def open_receiver(self, durable: str | None = None, group: str | None = None) -> Receiver:
        self.check_storage(durable)
        if group is not None:
            return ZmqMemberReceiver(self._context, self.settings, group)
        return ZmqReceiver(self._context, self.settings)

    def check(self) -> None:
        curve_of(self.settings)

    def publisher_address(self) -> str:
        return inbound_address(self.settings)

    def hub_refused(self) -> str | None:
        curve = curve_of(self.settings)  # tcp:// only: a ConfigurationError otherwise
        return None if curve is None else holding_refused(curve)

    def unreachable(self) -> str:
        settings = self.settings
        curve = curve_of(settings)
        refused = None if curve is None else holding_refused(curve)
        if refused is not None:
            return (
                f"No hub answered at {settings.address} within {settings.start_timeout:g} s "
                f"(bus.start_timeout), and {refused}: start `shellbot-bus hub` there with "
                "the hub's secret certificate, or a publisher that holds it"
            )
        return (
            f"No hub answered at {settings.address} within {settings.start_timeout:g} s "
            f"(bus.start_timeout): the publisher could not hold the hub there, and its "
            f"probe, sent to the hub's inbound side {inbound_address(settings)}, never came "
            f"back through {settings.address}; check bus.address and bus.inbound, or start "
            "`shellbot-bus hub` there"
        )

    def not_a_hub(self) -> str | None:
        """On tcp://: what holds the address when it is not a hub: another program, the
        inbound side of another bus's hub, or some other ZeroMQ socket. A hub secured with
        CURVE, where this program has no keys, is an ``AuthenticationError`` saying so."""
        if self.settings.scheme != "tcp":
            return None
        address = self.settings.address
        host, _, port = connect_address(address).split("://", 1)[1].rpartition(":")
        kind = zmtp.socket_type(host.strip("[]"), int(port))
        if kind == zmtp.SECURED and curve_of(self.settings) is None:
            raise errors.AuthenticationError(
                f"The hub at {address} is secured with CURVE, and this program has no keys: "
                "set bus.curve.server_key (the hub's public NAME.key) and "
                "bus.curve.client_key (this program's NAME.key_secret, whose NAME.key the "
                "hub's bus.curve.authorized folder holds); on the command line, "
                "--curve-server-key and --curve-client-key"
            )
        if kind in (zmtp.NOTHING, zmtp.ZEROMQ, zmtp.SECURED, "XPUB"):  # free, or a hub
            return None
        if kind == zmtp.SILENT and zmtp.paused(int(port)):
            return None  # a stopped holder: it goes on, or a publisher takes over from it
        held = zmtp.holder(int(port))
        if kind in (zmtp.FOREIGN, zmtp.SILENT):
            return (
                f"{address} is held by another program{held}, not a hub: it does not "
                "answer as ZeroMQ does; stop that program, or use another port"
            )
        if kind == "PULL":
            return (
                f"{address} is the inbound side of another bus's hub{held}: a bus on port P "
                f"takes P + 1 for its publishers; give this bus a port 2 or more away from "
                "the other's, or set bus.inbound on both"
            )
        if kind == "PUB":
            return (
                f"{address} is held by a ZeroMQ PUB socket{held}, not a hub: the original "
                "shellbot's publisher binds one there; give this bus another address, and "
                "`shellbot-bus bridge --legacy` relays between the two"
            )
        return (
            f"{address} is held by a ZeroMQ {kind} socket{held}, not a hub; stop that "
            "program, or use another port"
        )

    def open_hub(self) -> Hub | None:
        hub = _open_hub(self._context, self.settings)
        curve = curve_of(self.settings)
        may_hold = curve is None or holding_refused(curve) is None
        if hub is None and may_hold and self.settings.scheme == "tcp":
            # Held: by a live hub (fine), or by a stopped process that forwards nothing.
            if self._stopped_holder is None:
                self._stopped_holder = StoppedHolder(self.settings, inbound_address(self.settings))
            if self._stopped_holder.remove_if_stopped():
                hub = _open_hub(self._context, self.settings)
        return hub
