"""A publisher's life: its ``Phase`` in the process that holds it, and ``Shared``, what
its running process (or thread) tells the process that started it.

``Life`` is the one place the phase changes, under one lock, with the pills put while
no one could take them (``fan.put(None)`` or ``stop()`` before ``start()`` or
``run()``). The lock is the module's, not the object's: a ``Publisher`` travels to
other processes (pickled) and into forked children, and a lock would do neither; a
forked child gets a fresh one (``_process.after_fork``), as a thread of the parent may
have held it at the fork.
"""

from __future__ import annotations

import ctypes
import enum
import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from .. import _process
from .._transports import HUB_COUNTERS

FAILURE_BYTES = 1024  # room for the text of why the process could not start


class Phase(enum.Enum):
    """Where a publisher is in its life, as the process holding the object sees it."""

    NEW = "new"  # made, never started: a pill put now is kept (Life.keep_pill)
    RUNNING_HERE = "running here"  # run() called directly, past its readiness: pills go at once
    STARTING = "starting"  # start() is launching its process (a spawned one gets all of it)
    STARTED = "started"  # start() launched it; only this process may join it


class Life:
    """A publisher's phase and the pills kept for it until it runs."""

    def __init__(self) -> None:
        self.phase = Phase.NEW
        self._kept_pills = 0

    @property
    def started(self) -> bool:
        """True once ``start()`` was called, whatever came of it."""
        return self.phase in (Phase.STARTING, Phase.STARTED)

    def keep_pill(self) -> bool:
        """Keeps a pill put while no control socket would take it (until ``running()``);
        False when one would: the caller sends it."""
        with _lock:
            if self.phase in (Phase.NEW, Phase.STARTING):
                self._kept_pills += 1
                return True
            return False

    def begin_start(self) -> None:
        with _lock:
            self.phase = Phase.STARTING

    def launched(self) -> None:
        with _lock:
            self.phase = Phase.STARTED

    def running(self, here: bool) -> int:
        """Marks the run live (``here``: called directly) and takes the pills kept so far:
        from now on a pill is sent at once. Returns how many were kept."""
        with _lock:
            kept, self._kept_pills = self._kept_pills, 0
            if here and self.phase is Phase.NEW:
                self.phase = Phase.RUNNING_HERE
        return kept

    def no_longer_running_here(self) -> None:
        with _lock:
            if self.phase is Phase.RUNNING_HERE:
                self.phase = Phase.NEW


class HubState(enum.IntEnum):
    """What a publisher's process does, as its starter reads it (``Shared.hub_state``)."""

    STARTING = 0
    HUB = 1  # it holds the hub of its address
    CLIENT = 2  # it relies on the hub of another process, or on a broker
    FAILED = -1  # it could not start: Shared.failed_with() says why
    REFUSED = -2  # a secured hub refused its handshake: Shared.failed_with() says why


class IntCell(Protocol):
    """A ``ctypes.c_int`` in shared memory, or a plain copy of one."""

    value: int


class Counters(Protocol):
    """A ``ctypes`` array of ``HUB_COUNTERS`` in shared memory, or a list copied from it."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[int]: ...


@dataclass
class _Copy:
    value: int


@dataclass(frozen=True)
class Shared:
    """What a publisher's process tells the process that started it: whether it is
    ready, its ``HubState``, its hub's counters and why it failed. ``start()`` makes
    them in shared memory; a publisher that travels to another process takes a
    snapshot, where ``ready`` and ``failure`` are None."""

    ready: multiprocessing.synchronize.Event | None  # set once ready or failed
    state: IntCell  # a HubState
    stats: Counters  # in the order of HUB_COUNTERS
    failure: ctypes.Array[ctypes.c_char] | None  # the error's text

    @classmethod
    def unstarted(cls) -> Shared:
        return cls(None, _Copy(HubState.STARTING), [0] * len(HUB_COUNTERS), None)

    @classmethod
    def for_start(cls) -> Shared:
        # Raw (no lock): each value has one writer, the publisher's process.
        return cls(
            multiprocessing.Event(),
            multiprocessing.sharedctypes.RawValue(ctypes.c_int, HubState.STARTING),
            multiprocessing.sharedctypes.RawArray(ctypes.c_longlong, len(HUB_COUNTERS)),
            multiprocessing.sharedctypes.RawArray(ctypes.c_char, FAILURE_BYTES),
        )

    def snapshot(self) -> Shared:
        """What travels: shared memory and locks stay in the process that made them."""
        return Shared(None, _Copy(self.state.value), list(self.stats), None)

    @property
    def hub_state(self) -> HubState:
        return HubState(self.state.value)

    def wait_ready(self, timeout: float) -> bool:
        """In the starter: True once the process is ready or failed, within ``timeout``."""
        return self.ready is not None and self.ready.wait(timeout)

    def tell_state(self, state: HubState) -> None:
        self.state.value = state

    def tell_ready(self) -> None:
        if self.ready is not None:  # None when run() was called directly
            self.ready.set()

    def tell_failure(self, text: str, refused: bool) -> None:
        """Why the process could not start; then it is ready, as a failure is an answer."""
        if self.failure is not None:
            self.failure.value = text.encode("utf-8")[: FAILURE_BYTES - 1]
        self.tell_state(HubState.REFUSED if refused else HubState.FAILED)
        self.tell_ready()

    def failed_with(self) -> str:
        return self.failure.value.decode("utf-8", "replace") if self.failure is not None else ""

    def tell_stats(self, stats: Mapping[str, int]) -> None:
        for index, name in enumerate(HUB_COUNTERS):
            self.stats[index] = stats.get(name, 0)

    def hub_stats(self) -> dict[str, int]:
        return dict(zip(HUB_COUNTERS, self.stats, strict=True))


_lock = threading.Lock()


@_process.after_fork
def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
