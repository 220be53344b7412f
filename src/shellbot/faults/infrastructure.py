"""What a mode runs on: a ZeroMQ address (the hub is the workload's own; queue mode
too), one
nats-server on loopback, or three in network namespaces of their own."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from types import TracebackType

from . import netns
from .schedule import CLUSTER_MODES
from .servers import NatsServer, free_port_pair, wait_routes


class Infrastructure:
    """A context manager: up on enter, everything it made gone on exit."""

    def __init__(self, mode: str, directory: Path) -> None:
        self.mode = mode
        self.directory = directory
        self.nodes: list[NatsServer] = []
        self.namespaces: netns.Namespaces | None = None
        self.hub_port = 0
        self.address = ""

    @property
    def durable(self) -> bool:
        return self.mode == "durable"

    def __enter__(self) -> Infrastructure:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        if self.mode in ("zmq", "queue"):
            self.hub_port = free_port_pair()
            self.address = f"tcp://127.0.0.1:{self.hub_port}"
        elif self.mode == "nats":
            self.nodes = [NatsServer(self.directory / "nats", "n0")]
            self.nodes[0].start()
            self.address = self.nodes[0].url
        elif self.mode in CLUSTER_MODES:
            self._start_cluster()
        else:
            raise ValueError(f"unknown mode {self.mode!r}")

    def _start_cluster(self) -> None:
        netns.sweep()
        self.namespaces = spaces = netns.Namespaces().__enter__()
        for index in range(3):
            self.nodes.append(
                NatsServer(
                    self.directory / "cluster",
                    f"n{index}",
                    host=spaces.hosts[index],
                    port=netns.PORT,
                    monitor_port=netns.MONITOR_PORT,
                    cluster_port=netns.CLUSTER_PORT,
                    routes=[
                        f"{spaces.address_of(other, index)}:{netns.CLUSTER_PORT}"
                        for other in range(3)
                        if other != index
                    ],
                    jetstream=self.durable,
                    netns=spaces.names[index],
                )
            )
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_healthy(30.0)
        wait_routes(self.nodes, 30.0)
        self.address = ",".join(node.url for node in self.nodes)

    # -- faults of the nodes and their links ------------------------------------------

    def kill_node(self, index: int) -> None:
        self.nodes[index].kill()

    def start_node(self, index: int) -> None:
        if not self.nodes[index].alive:
            self.nodes[index].start(wait=False)

    def pause_node(self, index: int, paused: bool) -> None:
        self.nodes[index].signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def set_link(self, a: int, b: int, up: bool) -> None:
        assert self.namespaces is not None
        self.namespaces.set_link(a, b, up)

    def isolate(self, index: int, isolated: bool) -> None:
        for other in range(3):
            if other != index:
                self.set_link(index, other, not isolated)

    def heal(self, timeout: float = 30.0) -> list[str]:
        """Every node running and routed again; returns what did not come back."""
        problems = []
        if self.namespaces is not None:
            self.namespaces.heal()
        for node in self.nodes:
            node.signal(signal.SIGCONT)
            if not node.alive:
                node.start(wait=False)
        for node in self.nodes:
            try:
                node.wait_healthy(timeout)
            except RuntimeError as error:
                problems.append(str(error))
        if len(self.nodes) > 1 and not problems:
            try:
                wait_routes(self.nodes, timeout)
            except RuntimeError as error:
                problems.append(str(error))
        return problems

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        if self.namespaces is not None:
            self.namespaces.delete()
            self.namespaces = None
