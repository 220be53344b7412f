"""Transports, chosen by the scheme of ``bus.address``, imported only when used.

The bus keeps one transport per address and process. After a fork the child
drops what it inherited (ZeroMQ sockets must not cross a fork) and opens its
own on first use.
"""

from __future__ import annotations

import importlib
import threading

from .. import _process
from .._settings import BusSettings
from .base import Hub, Receiver, Sender, Transport

__all__ = ["Hub", "Receiver", "Sender", "Transport", "transport_for"]

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


@_process.after_fork
def _forget_after_fork() -> None:
    global _lock
    _transports.clear()
    _lock = threading.Lock()
