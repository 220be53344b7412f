"""Seeded schedules of faults: the same seed, mode and shape give the same list.

A fault starts ``at`` seconds into the run and is undone ``hold`` seconds later: a
SIGSTOPped process gets SIGCONT, a link taken down comes up, a killed process or node
starts again (a new life). A hub holder killed is not restarted: another publisher's
process takes the hub over, which is what is being tested. What replays is the
schedule, not the interleaving: processes and the kernel still choose their timing.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("zmq", "nats", "cluster", "durable", "queue")
CLUSTER_MODES = ("cluster", "durable")


@dataclass(frozen=True)
class Shape:
    """What a run is made of: counts of processes, channels and the rate of faults."""

    publishers: int = 3
    channels: int = 2
    witnesses: int = 1  # subscribers never killed (stopped, yes): they must see everything
    mortal: int = 1  # subscribers that may be killed and started again
    members: int = 3  # queue mode: the subscribers in the group, each may be killed
    rate: float = 150.0  # messages a second, per publisher
    faults_per_second: float = 1.0

    def subscribers(self, mode: str) -> int:
        """How many subscribers a run of ``mode`` has: the witnesses first, then the
        mortal ones (in queue mode, the group's members)."""
        return self.witnesses + (self.members if mode == "queue" else self.mortal)


@dataclass(frozen=True)
class Fault:
    at: float
    action: str  # kill, stop, restart, partition, isolate
    target: str  # hub, publisher:I, subscriber:I, node:I, link:A-B
    hold: float

    @property
    def ends(self) -> float:
        return self.at + self.hold

    @property
    def on_cluster(self) -> bool:
        """A fault of the NATS nodes or their links (one of those at a time)."""
        return self.target.startswith(("node:", "link:"))

    def describe(self) -> str:
        return f"{self.at:6.2f}s {self.action} {self.target} for {self.hold:.2f}s"


def choices(mode: str, shape: Shape) -> list[tuple[str, str]]:
    """The (action, target) pairs a schedule of ``mode`` draws from."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    pairs: list[tuple[str, str]] = []
    for index in range(shape.publishers):
        pairs += [("kill", f"publisher:{index}"), ("stop", f"publisher:{index}")]
    for index in range(shape.subscribers(mode)):
        pairs.append(("stop", f"subscriber:{index}"))
        # Durable subscribers resume where their name stands: every one may die.
        if mode == "durable" or index >= shape.witnesses:
            pairs.append(("kill", f"subscriber:{index}"))
    if mode in ("zmq", "queue"):  # queue groups are split at the ZeroMQ hub
        pairs += [("kill", "hub"), ("stop", "hub")]
    elif mode == "nats":
        pairs += [("restart", "node:0"), ("stop", "node:0")]
    elif mode in CLUSTER_MODES:
        for node in range(3):
            pairs += [("restart", f"node:{node}"), ("stop", f"node:{node}")]
            pairs.append(("isolate", f"node:{node}"))
        pairs += [("partition", f"link:{a}-{b}") for a, b in ((0, 1), (0, 2), (1, 2))]
    return pairs


def make(seed: int, mode: str, duration: float, shape: Shape | None = None) -> list[Fault]:
    """The faults of one run, in order of their start. At most one fault per target at
    a time, and at most one of the nodes or links at a time: a cluster of three keeps a
    quorum, so that what it acknowledged may be asked of it."""
    shape = shape or Shape()
    rng = random.Random(f"{mode}:{seed}")
    pairs = choices(mode, shape)
    count = max(1, round(duration * shape.faults_per_second))
    starts = sorted(round(rng.uniform(0.3, max(0.4, duration - 0.3)), 3) for _ in range(count))
    busy_until: dict[str, float] = {}
    cluster_busy_until = 0.0
    faults = []
    for at in starts:
        action, target = rng.choice(pairs)
        hold = 0.0 if target == "hub" and action == "kill" else round(rng.uniform(0.2, 2.0), 3)
        fault = Fault(at, action, target, hold)
        if busy_until.get(target, -1.0) > at:
            continue
        if fault.on_cluster and cluster_busy_until > at:
            continue
        busy_until[target] = fault.ends + 0.5  # room to come back before the next
        if fault.on_cluster:
            cluster_busy_until = fault.ends + 1.0
        faults.append(fault)
    return faults


def to_json(faults: list[Fault]) -> list[dict[str, Any]]:
    return [asdict(fault) for fault in faults]
