"""The bus against bare pyzmq (or, on NATS, bare nats-py), on this machine, in one run.

``python -m shellbot.bench [--quick] [--json FILE] [--only T1,T2] [--transport nats]`` (also
``shellbot-bus bench``) runs each workload in fresh processes over TCP loopback,
on free ports, once with the bus ("ours") and once with the anchor, a bare
pyzmq program written here for the same job (one PUB bound by the publisher,
SUB sockets connected, the channel as the first frame, orjson each way, and no
send before the subscriptions are in). Sides alternate, anchor first, so both
see the same machine; the table gives ours, the anchor and the ratio.

Workloads (full run; ``--quick`` shrinks them to a smoke run of seconds):

- T1 throughput: one publisher, one subscriber, one channel, 500,000 messages.
- T2 latency: ping-pong between two processes, each on its own channel, 10,000 round trips.
- T3 fan-out: one publisher, 8 subscribers of its channel, 100,000 messages.
- T4 fan-in: 8 spawned publishers, each on its own channel, one subscriber of the 8.
- T5 many channels: one subscriber of 10,000 channels, the publisher cycling over them.
- T6 memory: 1,000,000 messages while one subscriber is stopped (SIGSTOP) and another
  keeps up; then the stopped one reads again and a last message shows it its gap.
- T7 idle cost: a started publisher and a subscriber blocked in ``get``, 10 s of silence.
- T8 request/reply: one requester and one responder, 10,000 sequential requests (p50,
  p99, requests/s), then 8 requesters at once (requests/s); the anchor is a bare REQ/REP
  pair on ZeroMQ, ``nc.request()`` and a callback responder on NATS (``_requests``).
- T9 work queue: one publisher, a queue group of 8 member processes, 200,000 messages:
  deliveries/s against our T1, the largest share over the smallest, lost and twice; the
  anchor is a bare PUSH to 8 PULL sockets on ZeroMQ, queue subscriptions on NATS (``_groups``).
- T1d (NATS only) durable T1: a publisher on a durable bus (``bus.durable``) and a durable
  subscriber, 200,000 messages, until all are received and the publisher's ``stop()``
  confirmed all stored; then the latency from ``put()`` to the server's acknowledgement
  in a paced run, 2,000 messages at one a millisecond after 100 not counted (``_durable``).

On NATS (``--transport nats``: a nats-server the benchmark starts on free
loopback ports and stops at the end; ``--nats-url nats://HOST:PORT``: a server
of the user's, under subjects of the run's own), ours is the bus on that
server and the anchor a bare nats-py program (``_nats``), both on the same
server in the same run. T1, T3, T4 and T1d are judged at 0.9x the anchor or
above, T2's p50 at 1.5x or below; T5 and T1d's latencies are shown against the
anchor for information. The server the benchmark starts has JetStream on when
T1d runs (a store in its temporary folder), with the server's default sync (its
store written to disk every 2 minutes), or ``--nats-sync always`` (each write
synced before it is acknowledged) or another interval.

With ``--curve`` (ZeroMQ only), T1 and T2 also run on a bus secured with CURVE
(``bus.curve.*``, keys made for the run in a temporary folder), in the same rounds,
after the plain bus: the rows "with CURVE" give it against the plain bus of the same
run, judged at 0.7x of plain T1 or above and 1.3x of plain T2's p50 or below.

Exit code: 0 when every run finished, 1 when one failed; targets are reported,
not enforced (figures drift on shared machines: read the ratios).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import zmq

try:
    import psutil  # noqa: F401 - the workloads measure memory and CPU with it
except ImportError as missing:
    # Installs that work: the name shellbot on PyPI is another project.
    hint = (
        "the benchmark needs psutil: pip install psutil (from a checkout: pip install '.[bench]')"
    )
    if sys.argv[:1] == ["-m"]:  # python -m shellbot.bench, still locating its __main__
        sys.exit(f"shellbot.bench: error: {hint}")
    raise ImportError(hint) from missing
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import _durable, _groups, _nats, _requests, _runs
from ._runs import ANCHOR, OURS, Flow, Network

__all__ = ["WORKLOADS", "run"]


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


def _t1(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    return _runs.flow(side, Flow([["bench"]], [["bench"]], sizes.throughput), network)


def _t2(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    return _runs.ping_pong(side, sizes.round_trips, sizes.warmup, network)


def _t3(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    return _runs.flow(side, Flow([["bench"]], [["bench"]] * FANS, sizes.fan_out), network)


def _t4(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    channels = [f"direct-{index}" for index in range(FANS)]
    shape = Flow(
        [[channel] for channel in channels],
        [channels],
        sizes.fan_in // FANS,
        every_publisher_starts=True,
    )
    return _runs.flow(side, shape, network)


def _t5(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    channels = [f"direct-{index}" for index in range(sizes.channels)]
    return _runs.flow(side, Flow([channels], [channels], sizes.many), network)


def _t6(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    shape = Flow(
        [["bench"]],
        [["bench"]],
        sizes.memory,
        stalled=1,
        anchor_high_water_mark=100_000,  # the bus's default; unbounded would grow without end
        sample_rss=True,
        freeze_stalled=True,  # stopped outright (SIGSTOP): its socket stops reading too
    )
    return _runs.flow(side, shape, network)


def _t7(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    return _runs.idle(side, sizes.idle, network)


def _t8(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    return _requests.request_reply(side, sizes.round_trips, sizes.warmup, network)


def _t9(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    return _groups.work_queue(side, sizes.work, network)


def _t1d(side: str, sizes: Sizes, network: Network) -> dict[str, Any]:
    result = _durable.flow(side, sizes.durable, 0.0, network)
    paced = _durable.flow(side, sizes.paced_warmup + sizes.paced, PACE, network)
    latencies = paced.pop("acks_ns")
    # The first puts of a process wait for its first look at the stream (a JetStream API
    # request, on ours): shown apart, and left out of p50 and p99 as T2's warm-up is.
    paced["first_ack_us"] = latencies[0] / 1000 if latencies else None
    result["acks_ns"] = [latency for latency in latencies[sizes.paced_warmup :] if latency >= 0]
    result["paced"] = paced
    return result


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    measure: Callable[[str, Sizes, Network], dict[str, Any]]
    repeated: bool  # runs ``rounds`` times per side
    nats_only: bool = False  # JetStream's: runs with --transport nats only


WORKLOADS = {
    workload.key: workload
    for workload in (
        Workload("T1", "throughput, 1 publisher -> 1 subscriber", _t1, True),
        Workload("T2", "latency, ping-pong", _t2, True),
        Workload("T3", f"fan-out, 1 -> {FANS} subscribers", _t3, True),
        Workload("T4", f"fan-in, {FANS} spawned publishers -> 1", _t4, True),
        Workload("T5", "many channels, 1 subscriber of 10,000", _t5, True),
        Workload("T6", "memory, 1 stalled + 1 live subscriber", _t6, False),
        Workload("T7", "idle cost, no traffic", _t7, False),
        Workload("T8", "request/reply, 1 -> 1, then 8 requesters", _t8, True),
        Workload("T9", f"work queue, 1 -> a group of {_groups.MEMBERS}", _t9, True),
        Workload("T1d", "durable T1, 1 -> 1, stored and acknowledged", _t1d, True, True),
    )
}


# -- summaries --------------------------------------------------------------------------


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda result: result["rate"])


def _durable_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """T1d: the best run's rate, and the latencies to the server's acknowledgement of
    every round's paced run, pooled."""
    pooled = sorted(latency for result in runs for latency in result["acks_ns"])
    summary = {key: value for key, value in _best(runs).items() if key != "acks_ns"}
    count = len(pooled)
    summary["acknowledged"] = count
    firsts = [result["paced"]["first_ack_us"] for result in runs]
    summary["first_ack_us"] = max((first for first in firsts if first is not None), default=None)
    summary["ack_p50_us"] = pooled[count // 2] / 1000 if count else None
    summary["ack_p99_us"] = pooled[int(count * 0.99)] / 1000 if count else None
    return summary


def _latency(runs: list[dict[str, Any]]) -> dict[str, Any]:
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


def _row(
    key: str,
    measure: str,
    ours: float | None,
    anchor: float | None,
    target: str,
    met: bool | None,
    unit: str,
    ratio: float | None = None,
    judged: str = "ours",
) -> dict[str, Any]:
    """One line of the table; ``met`` is None where ``target`` is no target.

    ``judged`` names the figure the target reads, ``ours`` or ``ratio``.
    """
    if ratio is None and ours is not None and anchor:
        ratio = ours / anchor
    return {
        "workload": key,
        "measure": measure,
        "unit": unit,
        "ours": ours,
        "anchor": anchor,
        "ratio": ratio,
        "target": target,
        "met": met,
        "judged": judged,
    }


def _targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The verdicts of a run, by workload then measure, for ``--json``.

    A script reads ``targets["T5"]["throughput"]["met"]`` instead of recomputing
    it; rows without a target (figures given for information) are left out.
    """
    targets: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["met"] is None:
            continue
        on_ratio = row["judged"] == "ratio"
        targets.setdefault(row["workload"], {})[row["measure"]] = {
            "target": row["target"],
            "value": row["ratio"] if on_ratio else row["ours"],
            "unit": "x" if on_ratio else row["unit"],
            "met": row["met"],
        }
    return targets


def _summarize(
    key: str, ours: dict[str, Any], anchor: dict[str, Any], t1: float | None, nats: bool = False
) -> list:
    """The rows of one workload; ``nats``: a run on NATS, judged by its own targets
    (against bare nats-py on the same server: a broker's hops are the anchor's too)."""
    if key == "T8":
        return _requests.rows(ours, anchor, nats, _row)
    if key == "T9":
        return _groups.rows(ours, anchor, t1, _row)
    if nats and key in NATS_TARGETS:
        return _summarize_nats(key, ours, anchor, t1)
    if key == "T2":
        ratio = ours["p50_us"] / anchor["p50_us"]
        return [
            _row(
                key,
                "round trip p50",
                ours["p50_us"],
                anchor["p50_us"],
                "<= 2.5x anchor",
                ratio <= 2.5,
                "µs",
                judged="ratio",
            ),
            _row(
                key,
                "round trip p99",
                ours["p99_us"],
                anchor["p99_us"],
                "< 1000 µs",
                ours["p99_us"] < 1000,
                "µs",
            ),
        ]
    if key == "T6":
        return [
            _row(
                key,
                "peak RSS, publisher",
                ours["rss_publisher_mb"],
                anchor["rss_publisher_mb"],
                "< 200 MB",
                ours["rss_publisher_mb"] < 200,
                "MB",
            ),
            _row(
                key,
                "peak RSS, nats-server",
                ours["rss_hub_mb"] or None,  # 0: a server of the user's, not watched
                anchor["rss_hub_mb"] or None,
                "(information)",
                None,
                "MB",
            )
            if nats
            else _row(
                key,
                "peak RSS, hub",
                ours["rss_hub_mb"],
                None,
                "< 200 MB",
                ours["rss_hub_mb"] < 200,
                "MB",
            ),
            _row(
                key,
                "live subscriber lost",
                ours["lost"],
                anchor["lost"],
                "0",
                ours["lost"] == 0,
                "msgs",
            ),
            _row(
                key,
                "stalled subscriber received",
                ours["stalled_received"],
                anchor["stalled_received"],
                "",
                None,
                "msgs",
            ),
            _row(
                key,
                "stalled subscriber missed",
                ours["stalled_missed"],
                anchor["stalled_missed"],
                "counted",
                None,
                "msgs",
            ),
            _row(
                key,
                "stalled: neither received nor counted",
                ours["stalled_unaccounted"],
                anchor["stalled_unaccounted"],
                "0",
                ours["stalled_unaccounted"] == 0,
                "msgs",
            ),
        ]
    if key == "T7":
        return [
            _row(
                key,
                "CPU, all processes",
                ours["cpu_percent"],
                anchor["cpu_percent"],
                "< 1% of a core",
                ours["cpu_percent"] < 1.0,
                "% core",
            ),
        ]
    unit = "deliveries/s" if key == "T3" else "msgs/s"
    rows = []
    if key == "T1":
        rows.append(
            _row(
                key,
                "throughput",
                ours["rate"],
                anchor["rate"],
                ">= 1.0x anchor",
                ours["rate"] >= anchor["rate"] and ours["lost"] == 0,
                unit,
                judged="ratio",
            )
        )
    elif key == "T3":
        rows.append(
            _row(
                key,
                "aggregate deliveries",
                ours["rate"],
                anchor["rate"],
                "all received",
                ours["lost"] == 0,
                unit,
            )
        )
    elif key == "T4":
        rows.append(_row(key, "throughput", ours["rate"], anchor["rate"], "", None, unit))
        share = ours["rate"] / t1 if t1 else None
        rows.append(
            _row(
                key,
                "ours vs ours T1",
                ours["rate"],
                t1,
                ">= 0.8x T1",
                None if share is None else share >= 0.8 and ours["lost"] == 0,
                unit,
                ratio=share,
                judged="ratio",
            )
        )
    else:
        # T5 against the anchor's T5 of the same run: on 2 cores T5 is bound by the
        # CPU of three busy processes and T1 by put() alone, so T5 against our T1
        # falls whenever put() gets faster and cannot judge a change there.
        rows.append(
            _row(
                key,
                "throughput",
                ours["rate"],
                anchor["rate"],
                ">= 1.2x anchor",
                ours["rate"] >= 1.2 * anchor["rate"] and ours["lost"] == 0,
                unit,
                judged="ratio",
            )
        )
        rows.append(
            _row(
                key,
                "ours vs ours T1",
                ours["rate"],
                t1,
                "(information)",
                None,
                unit,
                ratio=ours["rate"] / t1 if t1 else None,
            )
        )
    rows.append(_row(key, "lost", ours["lost"], anchor["lost"], "0", ours["lost"] == 0, "msgs"))
    return rows


# On NATS: T1, T3 and T4 at 0.9x bare nats-py or above, T2's p50 within 1.5x; T5 and
# T2's p99 are shown against the anchor for information.
NATS_THROUGHPUT = 0.9
NATS_LATENCY = 1.5
NATS_TARGETS = ("T1", "T2", "T3", "T4", "T5", "T1d")


def _summarize_nats(
    key: str, ours: dict[str, Any], anchor: dict[str, Any], t1: float | None
) -> list[dict[str, Any]]:
    if key == "T2":
        ratio = ours["p50_us"] / anchor["p50_us"]
        return [
            _row(
                key,
                "round trip p50",
                ours["p50_us"],
                anchor["p50_us"],
                f"<= {NATS_LATENCY}x anchor",
                ratio <= NATS_LATENCY,
                "µs",
                judged="ratio",
            ),
            _row(
                key, "round trip p99", ours["p99_us"], anchor["p99_us"], "(information)", None, "µs"
            ),
        ]
    if key == "T1d":
        return _summarize_durable(ours, anchor)
    unit = "deliveries/s" if key == "T3" else "msgs/s"
    measure = "aggregate deliveries" if key == "T3" else "throughput"
    rows = []
    if key == "T5":
        rows.append(_row(key, measure, ours["rate"], anchor["rate"], "(information)", None, unit))
    else:
        rows.append(
            _row(
                key,
                measure,
                ours["rate"],
                anchor["rate"],
                f">= {NATS_THROUGHPUT}x anchor",
                ours["rate"] >= NATS_THROUGHPUT * anchor["rate"] and ours["lost"] == 0,
                unit,
                judged="ratio",
            )
        )
    if key in ("T4", "T5"):
        rows.append(
            _row(
                key,
                "ours vs ours T1",
                ours["rate"],
                t1,
                "(information)",
                None,
                unit,
                ratio=ours["rate"] / t1 if t1 else None,
            )
        )
    rows.append(_row(key, "lost", ours["lost"], anchor["lost"], "0", ours["lost"] == 0, "msgs"))
    return rows


def _summarize_durable(ours: dict[str, Any], anchor: dict[str, Any]) -> list[dict[str, Any]]:
    key = "T1d"
    # Lost: not received, or not confirmed stored (both must be 0).
    lost = ours["lost"] + ours["not_stored"]
    return [
        _row(
            key,
            "throughput, stored",
            ours["rate"],
            anchor["rate"],
            f">= {NATS_THROUGHPUT}x anchor",
            ours["rate"] >= NATS_THROUGHPUT * anchor["rate"] and lost == 0,
            "msgs/s",
            judged="ratio",
        ),
        _row(
            key,
            "put -> stored p50",
            ours["ack_p50_us"],
            anchor["ack_p50_us"],
            "(information)",
            None,
            "µs",
        ),
        _row(
            key,
            "put -> stored p99",
            ours["ack_p99_us"],
            anchor["ack_p99_us"],
            "(information)",
            None,
            "µs",
        ),
        _row(key, "lost", lost, anchor["lost"] + anchor["not_stored"], "0", lost == 0, "msgs"),
    ]


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("msgs/s", "deliveries/s", "requests/s", "msgs"):
        return f"{value:,.0f}"
    if unit == "% core":
        return f"{value:.2f}"
    if unit == "x":
        return f"{value:.3f}"
    return f"{value:,.1f}"


def _table(rows: list[dict[str, Any]], quick: bool, nats: bool = False) -> Table:
    title = "shellbot bus on nats:// vs bare nats-py" if nats else "shellbot bus vs bare pyzmq"
    if quick:
        title += " (quick: a smoke run, not a measurement)"
    table = Table(title=title)
    for name, justify in (
        ("workload", "left"),
        ("measure", "left"),
        ("unit", "left"),
        ("ours", "right"),
        ("anchor", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("met", "center"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        met = "" if row["met"] is None else ("yes" if row["met"] else "NO")
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        table.add_row(
            row["workload"],
            row["measure"],
            row["unit"],
            _number(row["ours"], row["unit"]),
            _number(row["anchor"], row["unit"]),
            ratio,
            row["target"],
            met,
        )
    return table


# -- the run ----------------------------------------------------------------------------


def _plan(keys: list[str], rounds: int, curve: bool = False) -> list[tuple[Workload, int, str]]:
    """The runs in their order: (workload, round, side).

    Round by round: each round runs every repeated workload once per side, anchor
    first, so each best is drawn from the whole run rather than from a minute of
    it (a shared machine's speed drifts, T4 is judged against T1 and T5 shown
    against it). With ``curve``, T1 and T2 run a third time per round, secured.
    """
    repeated = [key for key in keys if WORKLOADS[key].repeated]
    once = [key for key in keys if not WORKLOADS[key].repeated]

    def sides(key: str) -> tuple[str, ...]:
        return (ANCHOR, OURS, CURVE) if curve and key in CURVE_WORKLOADS else (ANCHOR, OURS)

    return [
        (WORKLOADS[key], round_, side)
        for round_ in range(rounds)
        for key in repeated
        for side in sides(key)
    ] + [(WORKLOADS[key], 0, side) for key in once for side in (ANCHOR, OURS)]


# --curve: ours secured with CURVE, against ours plain of the same run.
CURVE = "curve"
CURVE_WORKLOADS = ("T1", "T2")
CURVE_THROUGHPUT = 0.7  # T1 with CURVE at this share of plain T1 or above
CURVE_LATENCY = 1.3  # T2's p50 with CURVE at this multiple of plain or below


def _curve_rows(key: str, plain: dict[str, Any], secured: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows "with CURVE": the secured bus (ours) against the plain one (anchor column)."""
    if key == "T1":
        return [
            _row(
                key,
                "throughput with CURVE",
                secured["rate"],
                plain["rate"],
                f">= {CURVE_THROUGHPUT}x plain",
                secured["rate"] >= CURVE_THROUGHPUT * plain["rate"] and secured["lost"] == 0,
                "msgs/s",
                judged="ratio",
            ),
            _row(key, "lost with CURVE", secured["lost"], 0, "0", secured["lost"] == 0, "msgs"),
        ]
    return [
        _row(
            key,
            "round trip p50 with CURVE",
            secured["p50_us"],
            plain["p50_us"],
            f"<= {CURVE_LATENCY}x plain",
            secured["p50_us"] <= CURVE_LATENCY * plain["p50_us"],
            "µs",
            judged="ratio",
        ),
        _row(
            key,
            "round trip p99 with CURVE",
            secured["p99_us"],
            plain["p99_us"],
            "(information)",
            None,
            "µs",
        ),
    ]


def _curve_network(folder: str) -> Network:
    """A ZeroMQ network whose processes all hold the hub's secret and one client key."""
    from pathlib import Path

    from .._keys import keygen

    _, hub_secret = keygen("hub", Path(folder) / "keys")
    client_public, client_secret = keygen("client", Path(folder) / "keys")
    authorized = Path(folder) / "authorized"
    authorized.mkdir()
    (authorized / client_public.name).write_bytes(client_public.read_bytes())
    return Network(
        curve={
            "server_key": str(hub_secret),
            "client_key": str(client_secret),
            "authorized": str(authorized),
        }
    )


TRANSPORTS = ("zmq", "nats")


def _unwritable(path: str) -> str | None:
    """Why the report could not be written at ``path``, or None."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return "is a folder; name a file"
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (
        os.path.exists(target) and not os.access(target, os.W_OK)
    ):
        return "cannot be written here"
    return None


def run(
    quick: bool = False,
    json_file: str | None = None,
    only: list[str] | None = None,
    transport: str | None = None,
    nats_url: str | None = None,
    curve: bool = False,
    nats_sync: str | None = None,
) -> int:
    """Runs the benchmark, prints the table; returns the exit code (0: every run finished,
    1: a run failed or the NATS server could not be had, 2: bad options).

    ``transport``: ``zmq`` (the default) or ``nats``; on NATS, the benchmark starts a
    nats-server of its own on free loopback ports, or uses the one at ``nats_url``.
    ``curve``: T1 and T2 also on a bus secured with CURVE (ZeroMQ only).
    ``nats_sync``: JetStream's ``sync_interval`` on the benchmark's own server (T1d).
    """
    console = Console(width=None if sys.stdout.isatty() else 120)
    spelled = {key.upper(): key for key in WORKLOADS}  # t1, T1D: any case
    keys = [spelled.get(key.strip().upper(), key.strip()) for key in only] if only else []
    unknown = [key for key in keys if key not in WORKLOADS]
    if unknown:
        console.print(
            f"[red]Unknown workload {', '.join(unknown)}: choose among {', '.join(WORKLOADS)}"
        )
        return 2
    transport = transport or ("nats" if nats_url else "zmq")
    if transport not in TRANSPORTS:
        console.print(f"[red]Unknown transport {transport!r}: choose zmq or nats")
        return 2
    if not keys:
        keys = [key for key in WORKLOADS if transport == "nats" or not WORKLOADS[key].nats_only]
    only_on_nats = [key for key in keys if WORKLOADS[key].nats_only]
    if only_on_nats and transport != "nats":
        console.print(
            f"[red]{', '.join(only_on_nats)} measures NATS JetStream: it runs with --transport nats"
        )
        return 2
    if nats_url and transport != "nats":
        console.print("[red]--nats-url names a NATS server: it goes with --transport nats")
        return 2
    if nats_sync and (nats_url or not only_on_nats):
        console.print(
            "[red]--nats-sync sets the store of the benchmark's own nats-server: it goes "
            "with T1d and without --nats-url"
        )
        return 2
    if curve and transport != "zmq":
        console.print("[red]--curve secures the ZeroMQ bus: it goes with --transport zmq")
        return 2
    if json_file and (unwritable := _unwritable(json_file)):
        console.print(f"[red]--json {json_file}: {unwritable}")  # told now, not after the run
        return 2
    if transport == "zmq" and curve:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="shellbot-bench-keys-") as folder:
            secured = _curve_network(folder)
            return _run(console, quick, json_file, keys, _runs.ZEROMQ, {"curve": True}, secured)
    if transport == "zmq":
        return _run(console, quick, json_file, keys, _runs.ZEROMQ, {})
    if nats_url:
        problem = _one_nats_server(nats_url)
        if problem:
            console.print(f"[red]--nats-url: {problem}")
            return 2
    if _version("nats-py") is None:  # the optional extra
        console.print(
            "[red]--transport nats needs the NATS client, nats-py, which is not installed: "
            "install shellbot's nats extra (from its checkout: pip install '.[nats]')"
        )
        return 1
    server = None
    try:
        if nats_url is None:
            server = _nats.NatsServer(jetstream=bool(only_on_nats), sync=nats_sync)
            server.start()
            url = server.url
        else:
            url = nats_url
        info = _nats.server_info(url)
        versions = {"nats_server": info.get("version"), "nats_py": _version("nats-py")}
        where = {
            "nats_url": _nats.shown(url),
            "nats_server_started": server is not None,
            "nats_server_pid": None if server is None else server.pid,
            "nats_sync": nats_sync if server is not None else None,
        }
        return _run(console, quick, json_file, keys, Network(url, server), versions | where)
    except _nats.ServerError as error:
        console.print(f"[red]{error}")
        return 1
    finally:
        if server is not None:
            server.stop()


def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _one_nats_server(url: str) -> str | None:
    """Why ``url`` is not one NATS server's URL, or None."""
    from .._settings import nats_servers

    try:
        servers = nats_servers(url)
    except ValueError as error:
        return str(error).replace(f"bus.address {url!r}: ", "", 1)
    if len(servers) != 1:
        # The anchor's readiness (subscribe, then flush) holds on one server only.
        return (
            f"{url!r} names {len(servers)} servers: give one (on a cluster, a subscription "
            "reaches the other nodes later than the anchor's flush tells)"
        )
    return None


def _run(
    console: Console,
    quick: bool,
    json_file: str | None,
    keys: list[str],
    network: Network,
    about: dict[str, Any],
    secured: Network | None = None,
) -> int:
    nats = network.on_nats
    sizes = QUICK if quick else FULL
    plan = _plan(keys, sizes.rounds, curve=secured is not None)
    measured: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {OURS: [], ANCHOR: [], CURVE: []} for k in keys
    }
    errors: list[str] = []
    started = datetime.datetime.now(datetime.timezone.utc)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(plan))
        for workload, round_, side in plan:
            progress.update(
                task, description=f"{workload.key} {workload.title}: {side}, round {round_ + 1}"
            )
            if workload.key not in {error.split(":")[0] for error in errors}:
                try:
                    if side == CURVE:  # ours, on the secured network
                        result = workload.measure(OURS, sizes, secured or network)
                    else:
                        result = workload.measure(side, sizes, network)
                    measured[workload.key][side].append(result)
                except Exception as error:  # one failed run must not hide the others
                    errors.append(f"{workload.key}: {side}: {type(error).__name__}: {error}")
            progress.advance(task)
    rows: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    t1 = None
    for key in keys:
        runs = measured[key]
        if not runs[OURS] or not runs[ANCHOR]:
            continue
        if key == "T2":
            ours, anchor = _latency(runs[OURS]), _latency(runs[ANCHOR])
        elif key == "T1d":
            ours, anchor = _durable_summary(runs[OURS]), _durable_summary(runs[ANCHOR])
        elif key == "T8":
            ours, anchor = _requests.summary(runs[OURS]), _requests.summary(runs[ANCHOR])
        elif key in ("T6", "T7"):
            ours, anchor = runs[OURS][0], runs[ANCHOR][0]
        else:
            ours, anchor = _best(runs[OURS]), _best(runs[ANCHOR])
        if key == "T1":
            t1 = ours["rate"]
        workload_rows = _summarize(key, ours, anchor, t1, nats=nats)
        if runs[CURVE]:
            curved = _latency(runs[CURVE]) if key == "T2" else _best(runs[CURVE])
            workload_rows += _curve_rows(key, ours, curved)
        rows.extend(workload_rows)
        summaries[key] = {
            "title": WORKLOADS[key].title,
            "ours": ours,
            "anchor": anchor,
            "rounds": {
                side: [_slim(result) for result in runs[side]] for side in runs if runs[side]
            },
            "rows": workload_rows,
        }
        if runs[CURVE]:
            summaries[key]["curve"] = curved
    console.print(_table(rows, quick, nats=nats))
    if secured is not None:
        console.print(
            "Rows 'with CURVE': ours on a bus secured with CURVE (ours column) against ours "
            "plain of the same run (anchor column)."
        )
    for failure in errors:
        console.print(f"[red]failed: {failure}")
    if nats:
        stack = (
            f"nats-server {about['nats_server']} "
            f"({'started by the benchmark' if about['nats_server_started'] else about['nats_url']}"
            f"{', sync_interval ' + about['nats_sync'] if about.get('nats_sync') else ''})"
            f", nats-py {about['nats_py']}"
        )
    else:
        stack = f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}"
    console.print(
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {stack}, "
        f"{started:%Y-%m-%d %H:%M} UTC"
    )
    if json_file:
        report = {
            "command": " ".join(["python -m shellbot.bench", *map(_nats.shown, sys.argv[1:])]),
            "date": started.isoformat(timespec="seconds"),
            "cores": os.cpu_count(),
            "quick": quick,
            "transport": "nats" if nats else "zmq",
            "python": platform.python_version(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            **about,
            "sizes": sizes.__dict__,
            "targets": _targets(rows),
            "workloads": {key: _slim(summary) for key, summary in summaries.items()},
            "errors": errors,
        }
        with open(json_file, "wb") as file:
            file.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 1 if errors else 0


def _slim(result: dict[str, Any]) -> dict[str, Any]:
    """Without raw samples: the JSON report keeps figures, not every round trip."""
    return json.loads(
        json.dumps({k: v for k, v in result.items() if k not in ("rtts_ns", "acks_ns")})
    )
