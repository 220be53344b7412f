"""Fixtures and helpers for the tests of programs built on the bus.

The pytest plugin (``shellbot.testing.plugin``) is active once the package is
installed: ask for ``bus``, ``nats_server``, ``nats_cluster`` or ``faults`` by name.
The pieces are importable for tests that build their own: ``NatsNode`` and
``NatsCluster`` (real nats-servers on free ports), ``unique_address``.
"""

from __future__ import annotations

from ._addresses import SCHEMES, free_port_pair, unique_address
from ._buses import BusFactory, FixtureBus
from ._faults import Faults
from ._nats_server import NatsCluster, NatsNode, free_port, server_binary

__all__ = [
    "SCHEMES",
    "BusFactory",
    "Faults",
    "FixtureBus",
    "NatsCluster",
    "NatsNode",
    "free_port",
    "free_port_pair",
    "server_binary",
    "unique_address",
]
