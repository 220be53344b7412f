"""Where the processes of a run meet: ZeroMQ over TCP loopback on free ports, or a NATS
server under subjects of the run's own."""

from __future__ import annotations

import secrets
import socket
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .server import NatsServer

# What the server counted between the start and the end of a run's traffic: how many
# NATS messages carried the run's messages, and the slow consumers it cut off.
SERVER_COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes", "slow_consumers")


def free_ports(count: int, pairs: bool = False) -> list[int]:
    """``count`` ports free now; with ``pairs``, each p with p + 1 free too (a hub's inbound)."""
    ports: list[int] = []
    holders = []
    try:
        while len(ports) < count:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            holders.append(first)
            if pairs:
                if port >= 65534:
                    continue
                second = socket.socket()
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    second.close()
                    continue
                holders.append(second)
            ports.append(port)
    finally:
        for holder in holders:
            holder.close()
    return ports


def prefix() -> str:
    """Subjects of one run: under a prefix of its own, so that no run (nor a bus already
    on a server given by the user, under ``shellbot``) sees another's messages."""
    return f"shellbot-bench.{secrets.token_hex(4)}"


def subject(run_prefix: str, channel: str) -> str:
    """The anchor's subject for a channel: the very subject the bus uses for it."""
    return f"{run_prefix}.c.{channel}"


class Network:
    """Where the processes of a run meet: ZeroMQ over TCP loopback (``nats_url`` None),
    or the NATS server at ``nats_url``; ``server``, when the benchmark started that
    server itself (its memory, CPU and counters are then read too)."""

    def __init__(
        self,
        nats_url: str | None = None,
        server: NatsServer | None = None,
        curve: dict[str, str] | None = None,
    ):
        self.nats_url = nats_url
        self.server = server
        self.curve = curve  # bus.curve settings of ours, on ZeroMQ (--curve)

    @property
    def on_nats(self) -> bool:
        return self.nats_url is not None

    @property
    def transport(self) -> str:
        """``zmq`` or ``nats``: which targets judge a run here."""
        return "nats" if self.on_nats else "zmq"

    @property
    def url(self) -> str:
        assert self.nats_url is not None
        return self.nats_url

    def bus(self) -> dict[str, Any]:
        """The ``bus`` settings of ours for one run, shared by all its processes: a fresh
        address on ZeroMQ; on NATS, the server and a subject prefix of the run's own."""
        if self.nats_url is None:
            settings: dict[str, Any] = {
                "address": f"tcp://127.0.0.1:{free_ports(1, pairs=True)[0]}"
            }
            if self.curve is not None:
                settings["curve"] = dict(self.curve)
            return settings
        return {"address": self.nats_url, "nats": {"prefix": prefix()}}

    def server_process(self) -> psutil.Process | None:
        pid = None if self.server is None else self.server.pid
        return None if pid is None else psutil.Process(pid)

    def counters(self) -> dict[str, int] | None:
        """The server's message counters now (None on ZeroMQ or a server of the user's)."""
        varz = None if self.server is None else self.server.varz()
        if varz is None:
            return None
        return {key: int(varz.get(key, 0)) for key in SERVER_COUNTERS}


ZEROMQ = Network()
