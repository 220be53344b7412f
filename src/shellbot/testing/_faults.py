"""Faults on purpose: kill, pause and resume a nats-server node or a hub holder."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Union

from ..bus import Publisher
from ._nats_server import NatsNode, wait_stopped

__all__ = ["Faults", "Target"]

Target = Union[NatsNode, Publisher, int]  # noqa: UP007 - a runtime alias on Python 3.10 too
"""What a fault takes: a node, a started publisher in a process of its own, or a pid."""


class Faults:
    """Kills, pauses and resumes nodes and publishers' processes (a hub holder is the
    started publisher whose ``holds_hub`` is True). Whatever it paused and did not
    resume is resumed when the test ends, so that it can be stopped."""

    def __init__(self) -> None:
        self._paused: list[Target] = []

    def kill(self, target: Target, timeout: float = 10.0) -> None:
        """SIGKILL, as a crash would take it; returns once it is gone.

        Args:
            target: a ``NatsNode``, a started ``Publisher`` or a pid.
            timeout: seconds to wait for a process to be gone.

        Raises:
            ValueError: a publisher that runs in this process (``memory://``, ``inproc://``).
            TimeoutError: the process is still there after ``timeout`` seconds.
        """
        if isinstance(target, NatsNode):
            target.kill()
            return
        pid = self._pid(target)
        _signal(pid, signal.SIGKILL)
        if isinstance(target, Publisher):
            target.join(timeout)  # reaps it: a child of this process
        deadline = time.monotonic() + timeout
        while _exists(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"process {pid} still there {timeout} s after SIGKILL")
            time.sleep(0.01)

    def pause(self, target: Target) -> None:
        """SIGSTOP: the target hangs, its sockets open and silent, until ``resume()``.

        Raises:
            ValueError: a publisher that runs in this process (``memory://``, ``inproc://``).
        """
        if isinstance(target, NatsNode):
            target.pause()
        else:
            pid = self._pid(target)
            _signal(pid, signal.SIGSTOP)
            wait_stopped(pid)
        self._paused.append(target)

    def resume(self, target: Target) -> None:
        """SIGCONT: a paused target goes on.

        Raises:
            ValueError: a publisher that runs in this process (``memory://``, ``inproc://``).
        """
        if isinstance(target, NatsNode):
            target.resume()
        else:
            _signal(self._pid(target), signal.SIGCONT)
        if target in self._paused:
            self._paused.remove(target)

    def resume_all(self) -> None:
        """Resumes everything paused and not resumed yet."""
        for target in list(self._paused):
            self.resume(target)

    @staticmethod
    def _pid(target: Publisher | int) -> int:
        if isinstance(target, int):
            return target
        pid = target.pid
        if pid is None or pid == os.getpid():
            raise ValueError(
                "this publisher is not started in a process of its own (on memory:// and "
                "inproc:// it runs in a thread of the test's process): a fault needs "
                "tcp://, ipc:// or nats://"
            )
        return pid


def resume_publisher(publisher: Publisher) -> None:
    """SIGCONT to a publisher's own process, if it has one: a paused one cannot stop."""
    if publisher.pid is not None and publisher.pid != os.getpid():
        _signal(publisher.pid, signal.SIGCONT)


def _signal(pid: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone already: what the fault was for
        os.kill(pid, signal_number)


def _exists(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead and not reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
