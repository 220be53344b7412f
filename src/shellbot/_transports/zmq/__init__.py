"""``tcp://``, ``ipc://`` and ``inproc://``: the embedded ZeroMQ transport."""

from .endpoints import ZmqTransport

__all__ = ["ZmqTransport"]
