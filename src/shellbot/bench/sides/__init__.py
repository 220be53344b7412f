"""The sides of a run, a module each: ours (the bus), bare pyzmq, bare nats-py.

``side_for`` is the one place that picks the anchor for a network; the harness runs
every side through the same ``harness.Side`` protocol.
"""

from __future__ import annotations

from ..harness import OURS, Side
from ..network import Network
from .nats import NatsAnchor
from .ours import Ours
from .zmq import ZmqAnchor

__all__ = ["NatsAnchor", "Ours", "ZmqAnchor", "side_for"]


def side_for(side: str, network: Network) -> Side:
    """The side named ``side`` (``ours`` or ``anchor``) of one run on ``network``."""
    if side == OURS:
        return Ours(network)
    return NatsAnchor(network) if network.on_nats else ZmqAnchor(network)
