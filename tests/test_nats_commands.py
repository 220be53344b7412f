"""The JetStream receivers' worker loop alone (``nats/jetstream/commands.py``): filters
asked together apply once, before the next signal's subscription, in order."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("nats")

from shellbot._transports.nats.jetstream.commands import (
    Commands,
    Filter,
    Remake,
    Signal,
)


class Recorder:
    """What the loop did, in order: signals' subscriptions and each apply() with the
    filters it saw."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.done: list[object] = []

    def subscribe(self, prefix: bytes) -> None:
        self.done.append(("subscribe", prefix))

    def unsubscribe(self, prefix: bytes) -> None:
        self.done.append(("unsubscribe", prefix))

    async def apply(self) -> None:
        self.done.append(("apply", dict(self.counts)))


def _run(commands: list[object], failing: bool = False) -> list[object]:
    async def run() -> list[object]:
        counts: dict[str, int] = {}
        recorder = Recorder(counts)
        queue = Commands()
        queue.start()
        for command in commands:
            queue.put(command)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            queue.run(counts, recorder, recorder.apply, stop.is_set, lambda: failing)
        )
        await asyncio.sleep(0.3)  # past FILTERS_SETTLE: whatever waits is applied
        stop.set()
        queue.put(Remake())  # wakes the loop, which sees it is closed
        await asyncio.wait_for(task, 5)
        return recorder.done

    return asyncio.run(run())


def test_filters_asked_together_apply_once_before_the_next_signal() -> None:
    done = _run(
        [
            Filter("p.c.a", 1),
            Filter("p.c.b", 1),
            Filter("p.c.a", 1),
            Signal(b"\xffprobe", True),
            Filter("p.c.a", -1),
            Filter("p.c.b", -1),
            Signal(b"\xffprobe", False),
        ]
    )
    assert done == [
        ("apply", {"p.c.a": 2, "p.c.b": 1}),
        ("subscribe", b"\xffprobe"),
        ("apply", {"p.c.a": 1}),
        ("unsubscribe", b"\xffprobe"),
    ]


def test_a_remake_applies_the_filters_it_has() -> None:
    assert _run([Filter("p.c.a", 1), Signal(b"\xffx", True), Remake()]) == [
        ("apply", {"p.c.a": 1}),
        ("subscribe", b"\xffx"),
        ("apply", {"p.c.a": 1}),
    ]


def test_a_failure_in_apply_ends_the_loop() -> None:
    assert _run([Filter("p.c.a", 1), Signal(b"\xffx", True)], failing=True) == [
        ("apply", {"p.c.a": 1}),
    ]
