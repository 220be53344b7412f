"""Transports, chosen by the scheme of ``bus.address``, imported only when used.

The one entry into the transports for every module above them: ``transport_for``
(settings), ``transport_of`` (a context) and the contract's names (``base``). No
module above imports a transport's own modules, nor ``base`` itself: the
import-linter contracts in ``pyproject.toml`` check it (``lint-imports``).

The bus keeps one transport per address and process. After a fork the child
drops what it inherited (ZeroMQ sockets must not cross a fork) and opens its
own on first use.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from .. import _process
from .._settings import BusSettings
from .base import HUB_COUNTERS, Hub, HubKind, Receiver, Sender, Transport

if TYPE_CHECKING:
    from ..context import Context

__all__ = [
    "HUB_COUNTERS",
    "Hub",
    "HubKind",
    "Receiver",
    "Sender",
    "Transport",
    "transport_for",
    "transport_of",
]

# scheme -> (module, class): a transport's dependencies load only when its scheme is used.
_BY_SCHEME = {
    "tcp": ("shellbot._transports.zmq", "ZmqTransport"),
    "ipc": ("shellbot._transports.zmq", "ZmqTransport"),
    "inproc": ("shellbot._transports.zmq", "ZmqTransport"),
    "memory": ("shellbot._transports.memory", "MemoryTransport"),
    "nats": ("shellbot._transports.nats", "NatsTransport"),
}

_transports: dict[BusSettings, Transport] = {}
_lock = threading.Lock()


def transport_for(settings: BusSettings) -> Transport:
    """The transport of these settings in this process, made on first use."""
    transport = _transports.get(settings)
    if transport is None:
        with _lock:
            transport = _transports.get(settings)
            if transport is None:
                module_name, class_name = _BY_SCHEME[settings.scheme]
                transport_class = getattr(importlib.import_module(module_name), class_name)
                transport = _transports[settings] = transport_class(settings)
    return transport


def transport_of(context: Context) -> Transport:
    """The transport of the bus that ``context`` names (its settings read now)."""
    return transport_for(BusSettings.from_context(context))


@_process.after_fork
def _forget_after_fork() -> None:
    global _lock
    _transports.clear()
    _lock = threading.Lock()
