"""What belongs to this process alone: the resets a forked child makes first.

A child made by ``os.fork()`` (bare, or by ``multiprocessing``) starts as a copy of its
parent: its sockets, its locks (which a thread of the parent may have held), and
``multiprocessing``'s list of the parent's child processes, without the threads that
served any of them. Every module that keeps per-process state registers here how it
forgets it (``after_fork``); one ``os.register_at_fork`` hook runs them all in the
child, in the order they were registered.

First of all, the child forgets its parent's children. ``multiprocessing``'s exit
handler, which a bare fork's child inherits and runs when it ends normally
(``sys.exit()``, the end of its script, an uncaught exception), terminates every daemon
process on that list and joins the others: the parent's publisher processes, with the
hub one of them holds for everyone on the address. A child never stops a process it
did not start; ``multiprocessing`` empties the list in the processes it forks itself,
and here a bare fork's child does the same.

The other half: ``Origin``, which tells whether this is the process that made
something (a publisher's process launched, a manager started, a signal handler set).
"""

from __future__ import annotations

import multiprocessing.process
import os
from collections.abc import Callable

Reset = Callable[[], None]

_resets: list[Reset] = []


def after_fork(reset: Reset) -> Reset:
    """Registers ``reset`` to run in every child forked from now on; returns it."""
    _resets.append(reset)
    return reset


def _forget_parents_children() -> None:
    # The child's copy of the set: the parent's own list is untouched.
    multiprocessing.process._children.clear()  # type: ignore[attr-defined]  # private; as _bootstrap


def _in_child() -> None:
    _forget_parents_children()
    failed: BaseException | None = None
    for reset in _resets:  # each runs, as hooks of their own would: one error stops none
        try:
            reset()
        except Exception as error:
            failed = failed or error
    if failed is not None:
        raise failed  # reported as a fork hook's error is (sys.unraisablehook)


class Origin:
    """The process that made something: ``Origin()`` remembers it, ``is_current()``
    answers "am I that process?" (False in a forked child, and wherever a copy
    travelled). What only its maker may use (join a process, reuse a manager, raise
    in a handler) asks here, rather than comparing pids itself."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    def is_current(self) -> bool:
        return self.pid == os.getpid()


os.register_at_fork(after_in_child=_in_child)
