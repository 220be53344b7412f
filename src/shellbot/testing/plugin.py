"""The pytest plugin of shellbot: fixtures for the tests of programs built on the bus.

Active once ``shellbot-bus`` is installed (the ``pytest11`` entry point ``shellbot``);
``-p no:shellbot`` turns it off. Every fixture takes free loopback ports and folders of
the test's own, and stops what it started when the test ends, passed or failed; a
nats-server also dies with the test run itself, if the run is killed or timed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._buses import BusFactory
from ._faults import Faults
from ._nats_server import NatsCluster, NatsNode

__all__ = ["bus", "faults", "nats_cluster", "nats_server"]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsNode]:
    """A nats-server of the test's own: free loopback ports, JetStream on, its store in
    the test's folder; stopped after the test. ``nats_server.url`` is its address."""
    node = NatsNode(tmp_path / "nats-server", jetstream=True)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-servers routed to each other, JetStream on, each with its own store;
    stopped after the test. ``nats_cluster.address`` lists every node's URL (a
    ``bus.address``); ``nats_cluster.nodes[i]`` is one node."""
    cluster = NatsCluster(tmp_path / "nats-cluster", size=3, jetstream=True)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def bus(request: pytest.FixtureRequest) -> Iterator[BusFactory]:
    """A factory of buses on fresh addresses: ``bus()``, ``bus('tcp')``,
    ``bus(address=other.address)``.

    Parametrize it over transports with
    ``@pytest.mark.parametrize('bus', ['memory', 'tcp', 'nats'], indirect=True)``: the
    parameter is the default scheme (``memory`` without one). What its buses started is
    stopped after the test."""
    scheme = str(getattr(request, "param", "memory"))

    def nats_url() -> str:
        return str(request.getfixturevalue("nats_server").url)

    factory = BusFactory(scheme, nats_url)
    yield factory
    factory.close()


@pytest.fixture
def faults() -> Iterator[Faults]:
    """Kills, pauses and resumes a nats-server node or a hub holder (a started publisher
    in a process of its own): ``faults.kill(node)``, ``faults.pause(publisher)``,
    ``faults.resume(publisher)``. What is still paused at the end is resumed."""
    helper = Faults()
    yield helper
    helper.resume_all()
