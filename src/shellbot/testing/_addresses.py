"""Fresh bus addresses for tests: a name or a pair of ports nobody else uses."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

from ._nats_server import free_port, hand_out

__all__ = ["SCHEMES", "free_port_pair", "unique_address"]

SCHEMES = ("memory", "inproc", "ipc", "tcp", "nats")
"""Every transport of the bus, by the scheme of its address."""

_names = itertools.count()


def free_port_pair() -> int:
    """A loopback TCP port ``p`` such that ``p`` and ``p + 1`` (the hub's inbound side)
    are both free now, and neither handed out before by this process (``free_port()``).

    Raises:
        RuntimeError: no such pair was found in 100 tries.
    """
    for _ in range(100):
        port = free_port()
        if port >= 65534:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        hand_out(port + 1)
        return port
    raise RuntimeError("no pair of free TCP ports found")


def unique_address(scheme: str, folder: Path) -> str:
    """A ``bus.address`` of ``scheme`` (``memory``, ``inproc``, ``ipc`` or ``tcp``) that no
    other test uses: free ports on loopback for ``tcp``, a socket file in ``folder`` for
    ``ipc``, a name of this process's own otherwise.

    Raises:
        ValueError: for ``nats`` (a server gives its address) or an unknown scheme.
    """
    name = f"shellbot-test-{os.getpid()}-{next(_names)}"
    if scheme == "tcp":
        return f"tcp://127.0.0.1:{free_port_pair()}"
    if scheme == "ipc":
        return f"ipc://{folder}/{name}"
    if scheme in ("memory", "inproc"):
        return f"{scheme}://{name}"
    raise ValueError(
        f"unique_address() makes memory://, inproc://, ipc:// or tcp:// addresses; "
        f"got {scheme!r} (a nats:// address comes from a server: the nats_server fixture)"
    )
