"""Taking over from a hub whose process is stopped (SIGSTOP, Ctrl-Z): it holds the ports.

A stopped process forwards nothing, yet its listening sockets stay bound: no other
process can bind the address while it lives, and its kernel keeps accepting
connections into a backlog that no one reads. Heartbeats (see ``sockets.keep_alive``)
make every peer drop its connection to such a hub within a few seconds, and a
publisher without the hub looks at who holds the address when its takeover fails:
a process of this machine that listens on both ports of the hub, has been stopped
(state ``T``, not a debugger's stop) for ``STOPPED_FOR`` seconds, and that this
user may signal, is killed (SIGKILL); the port is free at once, and the next
takeover binds it. Nothing else is ever signalled: a hub that is slow or busy
answers heartbeats from libzmq's own threads and keeps its address; a hub on
another machine, or of another user, is left alone (the takeover then waits until
it resumes or ends).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket as net
import time

from ..._settings import BusSettings

STOPPED_FOR = 1.5  # seconds a holder stays stopped before it is taken for hung


def _local_port(address: str) -> int | None:
    """The port of a tcp:// address this machine may bind, else None."""
    scheme, rest = address.split("://", 1)
    if scheme != "tcp":
        return None
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if host in ("*", "0.0.0.0", "::", "localhost"):
        return int(port)
    try:
        ip = ipaddress.ip_address(net.gethostbyname(host))
    except (OSError, ValueError):
        return None
    if ip.is_loopback:
        return int(port)
    import psutil

    local = {entry.address for entries in psutil.net_if_addrs().values() for entry in entries}
    return int(port) if str(ip) in local else None


class StoppedHolder:
    """Watches the holder of an address this process failed to bind, on this machine."""

    def __init__(self, settings: BusSettings, inbound: str) -> None:
        self._port = _local_port(settings.address)
        self._inbound_port = _local_port(inbound)
        self._holder: int | None = None  # pid, found once per holder
        self._stopped_since: float | None = None

    def remove_if_stopped(self) -> bool:
        """Kills the holder once it has been stopped for STOPPED_FOR seconds; True then."""
        if self._port is None or self._inbound_port is None:
            return False
        import psutil

        if self._holder is None:
            self._holder = self._find_holder()
            self._stopped_since = None
            if self._holder is None:
                return False
        try:
            stopped = psutil.Process(self._holder).status() == psutil.STATUS_STOPPED
        except psutil.Error:  # gone: the next takeover binds, or finds another holder
            self._holder = None
            return False
        now = time.monotonic()
        if not stopped:
            self._stopped_since = None
            return False
        if self._stopped_since is None:
            self._stopped_since = now
        if now - self._stopped_since < STOPPED_FOR:
            return False
        holder, self._holder = self._holder, None
        if self._find_holder() != holder:  # it let the address go meanwhile
            return False
        try:
            os.kill(holder, signal.SIGKILL)
        except OSError:  # another user's, or gone: not ours to end
            return False
        _wait_ended(holder)
        return True

    def _find_holder(self) -> int | None:
        """The process listening on both of the hub's ports, when this user can see it."""
        import psutil

        listening: dict[int, set[int]] = {}
        try:
            connections = psutil.net_connections("tcp")
        except psutil.Error:
            return None
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN and connection.pid is not None:
                listening.setdefault(connection.laddr.port, set()).add(connection.pid)
        both = listening.get(self._port or 0, set()) & listening.get(self._inbound_port or 0, set())
        both.discard(os.getpid())
        return next(iter(both)) if len(both) == 1 else None


def _wait_ended(pid: int, timeout: float = 1.0) -> None:
    """Waits, bounded, until ``pid`` ended (a zombie too: its sockets are closed then)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        time.sleep(0.01)
