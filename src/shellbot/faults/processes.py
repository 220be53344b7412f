"""The workload's processes as the runner holds them: start, take turns, signal, end.

Each program runs in a session of its own, so that its group (the program and the
publisher process it starts) can be stopped or killed at once and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil


class Program:
    """One life of a publisher or subscriber of the workload."""

    def __init__(self, role: str, index: int, life: int, spec: dict[str, Any], directory: Path):
        self.role, self.index, self.life = role, index, life
        self.log = directory / f"{role}-{index}-{life}.log"
        self.stopped = False
        self.killed = False  # by the runner: an end it made, not a failure
        spec = {**spec, "log": str(self.log), "life": life}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "shellbot.faults.workload", role, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(directory / f"{role}-{index}-{life}.err", "ab"),  # noqa: SIM115
            text=True,
            start_new_session=True,
        )

    @property
    def name(self) -> str:
        return f"{self.role}:{self.index} life {self.life}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def expect(self, timeout: float) -> str:
        """The next line the program prints, or '' at its end or after ``timeout``."""
        assert self.popen.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.popen.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self.popen.stdout.readline().strip()

    def tell(self) -> None:
        """A line on its stdin: its turn to go on."""
        assert self.popen.stdin is not None
        with contextlib.suppress(OSError):
            self.popen.stdin.write("\n")
            self.popen.stdin.flush()

    def signal_group(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, number)

    def stop(self) -> None:
        self.signal_group(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        """SIGKILL to the program and every process of its group."""
        self.killed = True
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def pids(self) -> list[int]:
        """The program's pid and its descendants'."""
        try:
            process = psutil.Process(self.popen.pid)
            return [process.pid, *(child.pid for child in process.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []


def listener_of(programs: list[Program], port: int) -> int | None:
    """The pid among the programs' processes that listens on ``port`` (a hub holder)."""
    for program in programs:
        for pid in program.pids():
            try:
                connections = psutil.Process(pid).net_connections("tcp")
            except psutil.Error:
                continue
            for connection in connections:
                if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                    return pid
    return None


def wait_lines(programs: list[Program], word: str, timeout: float) -> list[str]:
    """Waits for ``word`` from each program; returns the names of those that did not say it."""
    deadline = time.monotonic() + timeout
    late = []
    for program in programs:
        said = program.expect(max(0.0, deadline - time.monotonic()))
        if said != word:
            late.append(f"{program.name} said {said!r}, not {word!r}")
    return late
