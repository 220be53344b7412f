"""Every target of the benchmark, as one table of data read by ``report.summarize``.

A row of the table is one line of the printed table: the workload, the measure, the
transport it applies to (None: both), the figure it reads from a side's summary, the
rule that judges it and the threshold of that rule. The rows of a workload come in the
table's order; the rows against ``PLAIN`` appear only when ``--curve`` ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .workloads.requests import FANS as REQUESTERS

Summary = Mapping[str, Any]  # one side's pooled figures of one workload
Figure = str | Callable[[Summary], "float | None"]  # a key of a summary, or what it derives


class Rule(Enum):
    """How a target judges its figure; ``judged`` names what the verdict reads."""

    AT_LEAST = ("ratio", ">= {threshold}x {against}")  # ours >= threshold x the reference
    AT_MOST = ("ratio", "<= {threshold}x {against}")  # ours <= threshold x the reference
    BELOW = ("ours", "< {threshold:g} {unit}")  # ours < threshold
    UP_TO = ("ours", "<= {threshold:.2f}")  # ours <= threshold
    NONE = ("ours", "0")  # ours == 0 (nothing lost)
    WHOLE = ("ours", "all received")  # only that nothing was lost (``whole``)
    INFORMATION = ("ours", "(information)")  # shown against the reference, not judged
    SHOWN = ("ours", "")  # shown, no target

    def __init__(self, judged: str, text: str) -> None:
        self.judged = judged
        self.text = text

    @property
    def judges(self) -> bool:
        return self not in (Rule.INFORMATION, Rule.SHOWN)


class Against(Enum):
    """What the anchor column of a row holds, and a ratio rule reads as its reference."""

    ANCHOR = "anchor"  # the anchor's summary of the same workload and run
    T1 = "T1"  # our T1 of the same run: its rate
    PLAIN = "plain"  # ours plain, the row's own figure read from ours secured (--curve)


def stored_loss(summary: Summary) -> float:
    """T1d: not received, or not confirmed stored (both must be 0)."""
    return summary["lost"] + summary["not_stored"]  # type: ignore[no-any-return]


def watched_rss_hub(summary: Summary) -> float | None:
    """The nats-server's peak RSS; 0 (a server of the user's, not watched) is no figure."""
    return summary["rss_hub_mb"] or None


def nothing(summary: Summary) -> None:
    """No figure: the anchor has no hub."""
    return None


def zero(summary: Summary) -> float:
    """Nothing: the anchor column of a loss that plain ours is not measured against."""
    return 0


@dataclass(frozen=True)
class Target:
    workload: str
    measure: str
    unit: str
    figure: Figure  # what ours reads from its summary
    rule: Rule
    threshold: float | None = None
    transport: str | None = None  # "zmq" or "nats"; None: both
    against: Against = Against.ANCHOR
    anchor_figure: Figure | None = None  # the anchor column's figure, if not ``figure``
    whole: Figure | None = None  # met only when this figure of ours is 0 too
    text: str | None = None  # the target as shown, where the rule's words do not fit

    @property
    def shown(self) -> str:
        """The target as the table and the JSON report show it."""
        if self.text is not None:
            return self.text
        return self.rule.text.format(
            threshold=self.threshold, against=self.against.value, unit=self.unit
        )


# The thresholds: ZeroMQ's are the bus's own promises, NATS's judge it against bare
# nats-py on the same server (a broker's hops are the anchor's too).
ZMQ_THROUGHPUT = 1.0  # T1 against bare pyzmq
ZMQ_LATENCY = 2.5  # T2's p50 against bare pyzmq
ZMQ_P99_US = 1000  # T2's p99, absolute
MANY_CHANNELS = 1.2  # T5 against the anchor's T5 of the same run (not our T1: see below)
OF_T1 = 0.8  # T4 and T9 against our T1 of the same run
RSS_MB = 200  # T6's peak RSS of the publisher and the hub
IDLE_CPU = 1.0  # T7, % of a core
NATS_THROUGHPUT = 0.9  # T1, T3, T4 and T1d against bare nats-py
NATS_LATENCY = 1.5  # T2's p50 against bare nats-py
REQUEST_LATENCY = 2.2  # T8's p50 on ZeroMQ (the hub's two hops against REQ/REP's one)
NATS_REQUEST_LATENCY = 1.2  # T8's p50 on NATS, where both go through the server
REQUESTS_AT_ONCE = 1.0  # T8 with 8 requesters, requests/s against the anchor's
SPREAD = 1.10  # T9: the largest share over the smallest
CURVE_THROUGHPUT = 0.7  # T1 with CURVE against plain T1 of the same run
CURVE_LATENCY = 1.3  # T2's p50 with CURVE against plain

AT_LEAST, AT_MOST, BELOW, UP_TO = Rule.AT_LEAST, Rule.AT_MOST, Rule.BELOW, Rule.UP_TO
NONE, WHOLE, INFORMATION, SHOWN = Rule.NONE, Rule.WHOLE, Rule.INFORMATION, Rule.SHOWN
T1, PLAIN = Against.T1, Against.PLAIN

# fmt: off
TARGETS: tuple[Target, ...] = (
    # T1 throughput
    Target("T1", "throughput", "msgs/s", "rate", AT_LEAST, ZMQ_THROUGHPUT, "zmq", whole="lost"),
    Target("T1", "throughput", "msgs/s", "rate", AT_LEAST, NATS_THROUGHPUT, "nats", whole="lost"),
    Target("T1", "lost", "msgs", "lost", NONE),
    Target("T1", "throughput with CURVE", "msgs/s", "rate", AT_LEAST, CURVE_THROUGHPUT, "zmq",
           PLAIN, whole="lost"),
    Target("T1", "lost with CURVE", "msgs", "lost", NONE, None, "zmq", PLAIN, anchor_figure=zero),
    # T2 latency
    Target("T2", "round trip p50", "µs", "p50_us", AT_MOST, ZMQ_LATENCY, "zmq"),
    Target("T2", "round trip p50", "µs", "p50_us", AT_MOST, NATS_LATENCY, "nats"),
    Target("T2", "round trip p99", "µs", "p99_us", BELOW, ZMQ_P99_US, "zmq"),
    Target("T2", "round trip p99", "µs", "p99_us", INFORMATION, None, "nats"),
    Target("T2", "round trip p50 with CURVE", "µs", "p50_us", AT_MOST, CURVE_LATENCY, "zmq",
           PLAIN),
    Target("T2", "round trip p99 with CURVE", "µs", "p99_us", INFORMATION, None, "zmq", PLAIN),
    # T3 fan-out
    Target("T3", "aggregate deliveries", "deliveries/s", "rate", WHOLE, None, "zmq",
           whole="lost"),
    Target("T3", "aggregate deliveries", "deliveries/s", "rate", AT_LEAST, NATS_THROUGHPUT,
           "nats", whole="lost"),
    Target("T3", "lost", "msgs", "lost", NONE),
    # T4 fan-in
    Target("T4", "throughput", "msgs/s", "rate", SHOWN, None, "zmq"),
    Target("T4", "throughput", "msgs/s", "rate", AT_LEAST, NATS_THROUGHPUT, "nats", whole="lost"),
    Target("T4", "ours vs ours T1", "msgs/s", "rate", AT_LEAST, OF_T1, "zmq", T1, whole="lost"),
    Target("T4", "ours vs ours T1", "msgs/s", "rate", INFORMATION, None, "nats", T1),
    Target("T4", "lost", "msgs", "lost", NONE),
    # T5 many channels, against the anchor's T5 of the same run: on 2 cores T5 is bound
    # by the CPU of three busy processes and T1 by put() alone, so T5 against our T1
    # falls whenever put() gets faster and cannot judge a change there.
    Target("T5", "throughput", "msgs/s", "rate", AT_LEAST, MANY_CHANNELS, "zmq", whole="lost"),
    Target("T5", "throughput", "msgs/s", "rate", INFORMATION, None, "nats"),
    Target("T5", "ours vs ours T1", "msgs/s", "rate", INFORMATION, None, None, T1),
    Target("T5", "lost", "msgs", "lost", NONE),
    # T6 memory
    Target("T6", "peak RSS, publisher", "MB", "rss_publisher_mb", BELOW, RSS_MB),
    Target("T6", "peak RSS, hub", "MB", "rss_hub_mb", BELOW, RSS_MB, "zmq",
           anchor_figure=nothing),
    Target("T6", "peak RSS, nats-server", "MB", watched_rss_hub, INFORMATION, None, "nats"),
    Target("T6", "live subscriber lost", "msgs", "lost", NONE),
    Target("T6", "stalled subscriber received", "msgs", "stalled_received", SHOWN),
    Target("T6", "stalled subscriber missed", "msgs", "stalled_missed", SHOWN, text="counted"),
    Target("T6", "stalled: neither received nor counted", "msgs", "stalled_unaccounted", NONE),
    # T7 idle cost
    Target("T7", "CPU, all processes", "% core", "cpu_percent", BELOW, IDLE_CPU,
           text="< 1% of a core"),
    # T8 request/reply
    Target("T8", "round trip p50", "µs", "p50_us", AT_MOST, REQUEST_LATENCY, "zmq"),
    Target("T8", "round trip p50", "µs", "p50_us", AT_MOST, NATS_REQUEST_LATENCY, "nats"),
    Target("T8", "round trip p99", "µs", "p99_us", INFORMATION),
    Target("T8", "requests/s, 1 requester", "requests/s", "rate", INFORMATION),
    Target("T8", f"requests/s, {REQUESTERS} requesters", "requests/s", "concurrent_rate",
           AT_LEAST, REQUESTS_AT_ONCE),
    # T9 work queue
    Target("T9", "deliveries", "deliveries/s", "rate", SHOWN),
    Target("T9", "ours vs ours T1", "deliveries/s", "rate", AT_LEAST, OF_T1, None, T1),
    Target("T9", "largest share / smallest", "x", "spread", UP_TO, SPREAD),
    Target("T9", "lost", "msgs", "lost", NONE),
    Target("T9", "delivered twice", "msgs", "twice", NONE),
    # T1d durable T1 (NATS only)
    Target("T1d", "throughput, stored", "msgs/s", "rate", AT_LEAST, NATS_THROUGHPUT, "nats",
           whole=stored_loss),
    Target("T1d", "put -> stored p50", "µs", "ack_p50_us", INFORMATION, None, "nats"),
    Target("T1d", "put -> stored p99", "µs", "ack_p99_us", INFORMATION, None, "nats"),
    Target("T1d", "lost", "msgs", stored_loss, NONE, None, "nats"),
)
# fmt: on
