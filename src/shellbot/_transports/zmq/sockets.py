"""What every socket of the ZeroMQ transport shares: the backend's calls on the hot
path, heartbeats, timeouts in milliseconds, and the addresses to bind and connect.

The endpoints (``endpoints``, ``member``) and the hub (``hub``, ``routing``) import
from here, never from each other.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _BackendSocket

from ..._settings import BusSettings

RECONNECT_INTERVAL_MS = 20  # a subscriber finds a (re)started hub within this much
# Heartbeats on every connection (ZMTP PING/PONG, answered by libzmq's own threads): a
# peer silent for HEARTBEAT_TIMEOUT_MS after a ping (a stopped process, a machine gone,
# a cut network) is dropped, within IVL + TIMEOUT = 2 s, and reconnected to.
HEARTBEAT_IVL_MS = 500
HEARTBEAT_TIMEOUT_MS = 1500

# The hot path calls the backend's methods: the sugar layer above them costs more per
# call than sending a small frame (routing_id/group handling, RCVMORE through enums).
# Whether a message waits is asked with a zero-timeout poll: measured here, it costs
# less than reading ZMQ_EVENTS, and far less than the exception of an empty receive.
send = _BackendSocket.send
recv = _BackendSocket.recv
get = _BackendSocket.get
poll = zmq.zmq_poll
RCVMORE = zmq.RCVMORE
NOBLOCK = zmq.NOBLOCK
SNDMORE = zmq.SNDMORE
POLLIN = zmq.POLLIN


def keep_alive(socket: zmq.Socket) -> None:
    """Heartbeats on every connection of ``socket`` (set before it binds or connects)."""
    socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    socket.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)


def milliseconds(timeout: float | None) -> int | None:
    return None if timeout is None else max(0, int(timeout * 1000 + 0.999))


def inbound_address(settings: BusSettings) -> str:
    """Where publishers connect: ``bus.inbound``, else derived from ``bus.address``: TCP
    port + 1, or the same path or name with ``.in`` appended (ipc://, inproc://)."""
    if settings.inbound:
        return settings.inbound
    scheme, rest = settings.address.split("://", 1)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        return f"tcp://{host}:{int(port) + 1}"
    return f"{settings.address}.in"


def connect_address(address: str) -> str:
    """The address to connect to: a hub bound on every interface is reached on loopback."""
    scheme, rest = address.split("://", 1)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if host in ("*", "0.0.0.0"):
            return f"tcp://127.0.0.1:{port}"
    return address
