"""Fixtures: every test gets its own bus address, on a port or name nobody else uses.

They build on the pieces of the ``shellbot.testing`` plugin (addresses, the
nats-server launcher); the names here are the suite's own (``bus`` is one Bus per
transport of the ``address`` parameter, ``nats_server`` runs no JetStream).

Tests that need a hub the bus holds itself (ZeroMQ, memory) are marked
``embedded_hub``: on a broker's address (nats://) they are skipped, and
``-m "not embedded_hub"`` runs the rest alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from _nats import NatsNode

from shellbot import Context
from shellbot.bus import Bus, Publisher, Subscriber
from shellbot.testing import free_port_pair  # noqa: F401 - tests import it from here
from shellbot.testing import unique_address as _unique_address


def unique_address(scheme: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh address of ``scheme``: the plugin's, with a folder of its own for ipc://."""
    return _unique_address(scheme, tmp_path_factory.mktemp("ipc") if scheme == "ipc" else Path())


@pytest.fixture
def tcp_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    return unique_address("tcp", tmp_path_factory)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsNode]:
    """A nats-server of this test's own, on free ports, stopped after it."""
    node = NatsNode(tmp_path / "nats")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def jetstream(tmp_path: Path) -> Iterator[NatsNode]:
    """One nats-server with JetStream, its store in the test's folder."""
    node = NatsNode(tmp_path / "js", jetstream=True)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., NatsNode]]:
    """Starts nats-servers with extra configuration; stops them all after the test."""
    started: list[NatsNode] = []

    def start(extra: str = "") -> NatsNode:
        node = NatsNode(tmp_path / "nats", name=f"n{len(started) + 1}", extra=extra)
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(params=["tcp", "ipc", "inproc", "memory", "nats"])
def address(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Each transport in turn: the contract suite runs once per transport (on nats://,
    against a server of the test's own)."""
    if request.param == "nats":
        return str(request.getfixturevalue("nats_server").url)
    return unique_address(request.param, tmp_path_factory)


@pytest.fixture(params=["tcp", "nats"])
def network_address(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Each transport that reaches other processes and machines, for the process suites."""
    if request.param == "nats":
        return str(request.getfixturevalue("nats_server").url)
    return unique_address(request.param, tmp_path_factory)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked embedded_hub is skipped on a broker's address: it has no such hub."""
    if item.get_closest_marker("embedded_hub") is None:
        return
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if "nats" in (params.get("address"), params.get("network_address")):
        pytest.skip("a NATS server is the hub: there is none to hold or take over")


@pytest.fixture
def context(address: str) -> Context:
    return Context({"bus": {"address": address}})


@pytest.fixture
def bus(context: Context) -> Bus:
    bus = Bus(context)
    bus.check()
    return bus


def running_publisher(bus: Bus) -> Iterator[Publisher]:
    """For fixtures: a started publisher, stopped after the test whatever happened."""
    publisher = bus.publish()
    publisher.start()
    yield publisher
    publisher.stop(timeout=5.0)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Looks until ``check()`` holds (counters reach a publisher's stats at most every
    0.1 s, routes reach the hub when it reads them), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def publisher(bus: Bus) -> Iterator[Publisher]:
    yield from running_publisher(bus)


Subscribers = Callable[..., Subscriber]


@pytest.fixture
def subscribers() -> Iterator[Subscribers]:
    """Opens subscribers confirmed live (``subscribers(bus, channels, pattern, group)``),
    and closes every one of them after the test, whatever happened."""
    opened: list[Subscriber] = []

    def subscribe(
        bus: Bus, channels: str | list[str], pattern: bool = False, group: str | None = None
    ) -> Subscriber:
        subscriber = bus.subscribe(channels, pattern=pattern, group=group)
        opened.append(subscriber)
        assert subscriber.wait_ready(timeout=5.0), f"{channels!r} not confirmed live in 5 s"
        return subscriber

    yield subscribe
    for subscriber in opened:
        subscriber.close()


@pytest.fixture
def tcp_bus(tcp_address: str) -> Bus:
    return Bus(Context({"bus": {"address": tcp_address}}))


@pytest.fixture
def raw() -> Iterator[zmq.Context]:
    """A ZeroMQ context of the test's own, for peers that are not the bus."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def inbound_of(address: str) -> str:
    """The hub's inbound side for a tcp:// address: the port after it."""
    host, port = address.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"
