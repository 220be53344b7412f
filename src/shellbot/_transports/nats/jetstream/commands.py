"""What a JetStream receiver's worker is asked to do, in order, and the worker's loop.

The caller's thread asks (``subscribe``, ``unsubscribe``, a remake); the loop queues
each as a command (``Commands.put``) and one task does them one after the other
(``run``): the durable subscriber's and the durable group's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

FILTERS_SETTLE = 0.05  # seconds without a change before filters asked for are applied


@dataclass(frozen=True)
class Filter:
    """One subscription more (``change`` 1) or fewer (-1) to a filter subject."""

    subject: str
    change: int


@dataclass(frozen=True)
class Signal:
    """A bus signal's core subscription, made or dropped."""

    prefix: bytes
    subscribing: bool


@dataclass(frozen=True)
class Remake:
    """The consumer is made anew, with the filters it has (a durable subscriber's)."""


Command = Filter | Signal | Remake


class Signals(Protocol):
    """Where signals' subscriptions go: the core receiver sharing the inbox."""

    def subscribe(self, prefix: bytes) -> None: ...

    def unsubscribe(self, prefix: bytes) -> None: ...


class Commands:
    """The commands asked for and not done yet, in the loop."""

    def __init__(self) -> None:
        self._queue: deque[Command] = deque()
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        """In the loop, before the first ``put``."""
        self._wake = asyncio.Event()

    def put(self, command: Command) -> None:
        assert self._wake is not None
        self._queue.append(command)
        self._wake.set()

    async def run(
        self,
        counts: dict[str, int],
        signals: Signals,
        apply: Callable[[], Awaitable[None]],
        closed: Callable[[], bool],
        failed: Callable[[], bool],
    ) -> None:
        """Does the commands one after the other: ``counts`` (subscriptions per filter
        subject) and ``signals`` kept here, ``apply()`` called for the filters. Filters
        asked for together (a subscriber's channels come one call each) apply once:
        before the next signal's subscription (the readiness probe, which must follow
        them), or once no command came for FILTERS_SETTLE seconds."""
        queue, wake = self._queue, self._wake
        assert wake is not None
        changed = False  # filters (or a remake) asked for and not applied yet
        while not closed():
            if not queue:
                wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), FILTERS_SETTLE if changed else None)
            if changed and (not queue or isinstance(queue[0], Signal)):
                changed = False
                await apply()
                if failed():
                    return
                continue
            if not queue:
                continue
            match queue.popleft():
                case Filter(subject, change):
                    count = counts.get(subject, 0) + change
                    if count > 0:
                        counts[subject] = count
                    else:
                        counts.pop(subject, None)
                    changed = True
                case Remake():
                    changed = True
                case Signal(prefix, subscribing):
                    if subscribing:
                        signals.subscribe(prefix)
                    else:
                        signals.unsubscribe(prefix)
