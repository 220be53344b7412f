"""The workloads: their sizes, what each runs on one side, how its rounds are pooled.

T1-T7 are shapes of the harness (a flow, a ping-pong, an idle wait) run by any side;
T8 (``requests``), T9 (``groups``) and T1d (``durable``) have modules of their own.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import harness
from ..harness import Flow
from ..network import Network
from ..sides import side_for
from . import durable, groups, requests

Result = dict[str, Any]  # what one run of a workload on one side measured


@dataclass(frozen=True)
class Sizes:
    throughput: int  # T1 messages
    round_trips: int  # T2
    warmup: int  # T2 round trips not counted
    fan_out: int  # T3 messages, each to every subscriber
    fan_in: int  # T4 messages in all, split over the publishers
    many: int  # T5 messages
    channels: int  # T5 channels
    memory: int  # T6 messages
    idle: float  # T7 seconds
    rounds: int  # runs per side of T1-T5 and T1d, round by round; the best counts
    durable: int  # T1d messages
    paced: int  # T1d messages of the latency run, one each PACE seconds
    paced_warmup: int  # T1d messages put before those, not counted
    work: int = 200_000  # T9 messages


FULL = Sizes(
    500_000, 10_000, 500, 100_000, 500_000, 500_000, 10_000, 1_000_000, 10.0, 3, 200_000, 2_000, 100
)
QUICK = Sizes(
    20_000, 300, 50, 5_000, 20_000, 20_000, 10_000, 50_000, 1.0, 1, 2_000, 100, 10, 20_000
)
PACE = 0.001  # seconds between two puts of T1d's latency run

FANS = 8  # subscribers of T3, publishers of T4


def _t1(side: str, sizes: Sizes, network: Network) -> Result:
    shape = Flow([["bench"]], [["bench"]], sizes.throughput)
    return harness.flow(side_for(side, network), shape, network)


def _t2(side: str, sizes: Sizes, network: Network) -> Result:
    return harness.ping_pong(side_for(side, network), sizes.round_trips, sizes.warmup)


def _t3(side: str, sizes: Sizes, network: Network) -> Result:
    shape = Flow([["bench"]], [["bench"]] * FANS, sizes.fan_out)
    return harness.flow(side_for(side, network), shape, network)


def _t4(side: str, sizes: Sizes, network: Network) -> Result:
    channels = [f"direct-{index}" for index in range(FANS)]
    shape = Flow(
        [[channel] for channel in channels],
        [channels],
        sizes.fan_in // FANS,
        every_publisher_starts=True,
    )
    return harness.flow(side_for(side, network), shape, network)


def _t5(side: str, sizes: Sizes, network: Network) -> Result:
    channels = [f"direct-{index}" for index in range(sizes.channels)]
    shape = Flow([channels], [channels], sizes.many)
    return harness.flow(side_for(side, network), shape, network)


def _t6(side: str, sizes: Sizes, network: Network) -> Result:
    shape = Flow(
        [["bench"]],
        [["bench"]],
        sizes.memory,
        stalled=1,
        anchor_high_water_mark=100_000,  # the bus's default; unbounded would grow without end
        sample_rss=True,
        freeze_stalled=True,  # stopped outright (SIGSTOP): its socket stops reading too
    )
    return harness.flow(side_for(side, network), shape, network)


def _t7(side: str, sizes: Sizes, network: Network) -> Result:
    return harness.idle(side_for(side, network), sizes.idle, network)


def _t8(side: str, sizes: Sizes, network: Network) -> Result:
    return requests.request_reply(side, sizes.round_trips, sizes.warmup, network)


def _t9(side: str, sizes: Sizes, network: Network) -> Result:
    return groups.work_queue(side, sizes.work, network)


def _t1d(side: str, sizes: Sizes, network: Network) -> Result:
    return durable.measure(side, sizes.durable, sizes.paced, sizes.paced_warmup, PACE, network)


# -- pooling: the rounds of one side, as one summary --------------------------------------


def best(runs: list[Result]) -> Result:
    """The run of the highest rate."""
    return max(runs, key=lambda result: result["rate"])


def first(runs: list[Result]) -> Result:
    """The one run of a workload that runs once per side."""
    return runs[0]


def latency(runs: list[Result]) -> Result:
    """The round trips of every round, pooled."""
    pooled = sorted(rtt for result in runs for rtt in result["rtts_ns"])
    count = len(pooled)
    return {
        "round_trips": count,
        "p50_us": pooled[count // 2] / 1000,
        "p90_us": pooled[int(count * 0.90)] / 1000,
        "p99_us": pooled[int(count * 0.99)] / 1000,
        "max_us": pooled[-1] / 1000,
        "mean_us": statistics.fmean(pooled) / 1000,
    }


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    measure: Callable[[str, Sizes, Network], Result]  # one run on one side
    repeated: bool  # runs ``rounds`` times per side
    pool: Callable[[list[Result]], Result] = best  # a side's rounds as its summary
    nats_only: bool = False  # JetStream's: runs with --transport nats only


WORKLOADS = {
    workload.key: workload
    for workload in (
        Workload("T1", "throughput, 1 publisher -> 1 subscriber", _t1, True),
        Workload("T2", "latency, ping-pong", _t2, True, latency),
        Workload("T3", f"fan-out, 1 -> {FANS} subscribers", _t3, True),
        Workload("T4", f"fan-in, {FANS} spawned publishers -> 1", _t4, True),
        Workload("T5", "many channels, 1 subscriber of 10,000", _t5, True),
        Workload("T6", "memory, 1 stalled + 1 live subscriber", _t6, False, first),
        Workload("T7", "idle cost, no traffic", _t7, False, first),
        Workload(
            "T8",
            f"request/reply, 1 -> 1, then {requests.FANS} requesters",
            _t8,
            True,
            requests.summary,
        ),
        Workload("T9", f"work queue, 1 -> a group of {groups.MEMBERS}", _t9, True),
        Workload(
            "T1d",
            "durable T1, 1 -> 1, stored and acknowledged",
            _t1d,
            True,
            durable.summary,
            nats_only=True,
        ),
    )
}
