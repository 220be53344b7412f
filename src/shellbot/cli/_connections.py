"""The connections to a hub's TCP ports, for ``hub`` to log, seen through psutil."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._common import err


class Connections:
    """Connections to the hub's TCP ports, seen through psutil (a dependency of the install)."""

    def __init__(self, address: str, inbound: str) -> None:
        self.sides: dict[int, str] = {}
        for side, where in (("subscriber", address), ("publisher", inbound)):
            scheme, rest = where.split("://", 1)
            if scheme == "tcp":
                self.sides[int(rest.rpartition(":")[2])] = side
        self.known: set[tuple[str, str]] = set()
        try:
            import psutil

            self.process: Any = psutil.Process()
        except ImportError:  # an install without its dependencies: say so, log counters
            self.process = None
            if self.sides:
                err.print("Connections are not logged: psutil is missing (pip install psutil)")

    def changes(self) -> Iterator[tuple[tuple[str, str], str]]:
        if self.process is None or not self.sides:
            return
        list_connections = (
            getattr(self.process, "net_connections", None) or self.process.connections
        )
        try:
            connections = list_connections(kind="tcp")
        except Exception:  # psutil may be denied a look; the hub goes on without it
            return
        now = {
            (self.sides[c.laddr.port], f"{c.raddr.ip}:{c.raddr.port}")
            for c in connections
            if c.raddr and c.laddr.port in self.sides and c.status == "ESTABLISHED"
        }
        for side, peer in sorted(now - self.known):
            yield ("connected", "green"), f" {side} from {peer}"
        for side, peer in sorted(self.known - now):
            yield ("disconnected", "yellow"), f" {side} from {peer}"
        self.known = now
