"""Where a started publisher runs: its own process, or a thread of the caller's.

The publisher is a ``multiprocessing.Process``, as the original is; on a transport
whose hub lives in one process (``inproc://``, ``memory://``) it runs as a thread
instead. A runner answers for either what ``Process`` answers: whether it is alive,
``join()``, ``terminate()``, and whether this process started it. It belongs to the
process that started it, and never travels with the publisher.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

from .. import _process


class ThreadRunner:
    """A thread of this process, which ``terminate()`` cannot end: the publisher's
    ``run()`` ends on its own, on a pill or once the switch is off."""

    in_thread = True

    def __init__(self, target: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=target, name="shellbot-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None) -> None:
        self._thread.join(timeout)

    def terminate(self) -> None:
        pass

    def started_here(self) -> bool:
        # A fork's copy of the thread is not alive: nothing is sent to a publisher gone.
        return True


class ProcessRunner:
    """The publisher's own process: ``multiprocessing.Process``'s methods, called once
    it was launched from here."""

    in_thread = False

    def __init__(self, process: multiprocessing.Process) -> None:
        self._process = process
        self._launched_by: _process.Origin | None = None  # set once launched

    def start(self) -> None:
        multiprocessing.Process.start(self._process)
        self._launched_by = _process.Origin()

    # Only the starter may look at, join or end the process: in a process forked after
    # start() it is the parent's, and multiprocessing would assert or signal it.
    def is_alive(self) -> bool:
        return self.started_here() and multiprocessing.Process.is_alive(self._process)

    def join(self, timeout: float | None) -> None:
        if self.started_here():
            multiprocessing.Process.join(self._process, timeout)

    def terminate(self) -> None:
        if self.started_here():
            multiprocessing.Process.terminate(self._process)

    def started_here(self) -> bool:
        """False in a process forked after ``start()``: only the starter can join it."""
        return self._launched_by is not None and self._launched_by.is_current()


Runner = ThreadRunner | ProcessRunner
