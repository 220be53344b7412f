"""What a run shows: one summariser that reads the targets table, the printed table,
and the ``--json`` report."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

import orjson
import zmq
from rich.console import Console
from rich.table import Table

from .harness import ANCHOR, CURVE, OURS
from .server import shown
from .targets import TARGETS, Against, Figure, Rule, Summary, Target
from .workloads import WORKLOADS, Sizes

Measured = dict[str, dict[str, list[dict[str, Any]]]]  # workload -> side -> its runs


class Row(TypedDict):
    """One line of the table; ``met`` is None where ``target`` is no target, and
    ``judged`` names the figure the target reads, ``ours`` or ``ratio``."""

    workload: str
    measure: str
    unit: str
    ours: float | None
    anchor: float | None
    ratio: float | None
    target: str
    met: bool | None
    judged: str


def _read(figure: Figure, summary: Summary | None) -> Any:
    if summary is None:
        return None
    return summary[figure] if isinstance(figure, str) else figure(summary)


def _met(target: Target, ours: Any, ratio: float | None, subject: Summary) -> bool | None:
    rule = target.rule
    if not rule.judges:
        return None
    whole = target.whole is None or _read(target.whole, subject) == 0
    if rule is Rule.WHOLE:
        return whole
    if rule is Rule.NONE:
        return ours == 0 and whole  # type: ignore[no-any-return]
    limit = target.threshold
    assert limit is not None, target
    if rule is Rule.AT_LEAST or rule is Rule.AT_MOST:
        if ratio is None:  # nothing to judge against (no T1 in the run)
            return None
        met = ratio >= limit if rule is Rule.AT_LEAST else ratio <= limit
    else:
        met = ours is not None and (ours < limit if rule is Rule.BELOW else ours <= limit)
    return met and whole


def row(target: Target, subject: Summary, reference: Summary | None) -> Row:
    """The line of ``target``: ``subject``'s figure against ``reference``'s."""
    ours = _read(target.figure, subject)
    anchor = _read(target.anchor_figure or target.figure, reference)
    ratio = ours / anchor if ours is not None and anchor else None
    return {
        "workload": target.workload,
        "measure": target.measure,
        "unit": target.unit,
        "ours": ours,
        "anchor": anchor,
        "ratio": ratio,
        "target": target.shown,
        "met": _met(target, ours, ratio, subject),
        "judged": target.rule.judged,
    }


def summarize(
    key: str,
    ours: Summary,
    anchor: Summary,
    t1: float | None = None,
    transport: str = "zmq",
    curve: Summary | None = None,
) -> list[Row]:
    """The rows of one workload on ``transport``, in the table's order: ours against the
    anchor, against our ``t1`` (T1's rate of the same run, if it ran) and, with
    ``curve`` (ours secured), the secured bus against ours plain."""
    pairs: dict[Against, tuple[Summary | None, Summary | None]] = {
        Against.ANCHOR: (ours, anchor),
        Against.T1: (ours, None if t1 is None else {"rate": t1}),
        Against.PLAIN: (curve, ours),
    }
    rows = []
    for target in TARGETS:
        if target.workload != key or target.transport not in (None, transport):
            continue
        subject, reference = pairs[target.against]
        if subject is not None:
            rows.append(row(target, subject, reference))
    return rows


def verdicts(rows: list[Row]) -> dict[str, dict[str, dict[str, Any]]]:
    """The verdicts of a run, by workload then measure, for ``--json``.

    A script reads ``targets["T5"]["throughput"]["met"]`` instead of recomputing
    it; rows without a target (figures given for information) are left out.
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for line in rows:
        if line["met"] is None:
            continue
        on_ratio = line["judged"] == "ratio"
        found.setdefault(line["workload"], {})[line["measure"]] = {
            "target": line["target"],
            "value": line["ratio"] if on_ratio else line["ours"],
            "unit": "x" if on_ratio else line["unit"],
            "met": line["met"],
        }
    return found


def summaries(
    keys: tuple[str, ...], measured: Measured, transport: str
) -> tuple[list[Row], dict[str, Any]]:
    """Every workload's rows, and its summary for the JSON report, from its runs: each
    side's rounds pooled as its workload says."""
    rows: list[Row] = []
    found: dict[str, Any] = {}
    t1 = None
    for key in keys:
        runs = measured[key]
        if not runs[OURS] or not runs[ANCHOR]:
            continue
        pool = WORKLOADS[key].pool
        ours, anchor = pool(runs[OURS]), pool(runs[ANCHOR])
        if key == "T1":
            t1 = ours["rate"]
        curved = pool(runs[CURVE]) if runs[CURVE] else None
        workload_rows = summarize(key, ours, anchor, t1, transport, curved)
        rows.extend(workload_rows)
        found[key] = {
            "title": WORKLOADS[key].title,
            "ours": ours,
            "anchor": anchor,
            "rounds": {
                side: [slim(result) for result in runs[side]] for side in runs if runs[side]
            },
            "rows": workload_rows,
        }
        if curved is not None:
            found[key]["curve"] = curved
    return rows, found


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


def table(rows: list[Row], quick: bool, transport: str = "zmq") -> Table:
    """The table as printed: a line per row, the verdict in its last column."""
    nats = transport == "nats"
    title = "shellbot bus on nats:// vs bare nats-py" if nats else "shellbot bus vs bare pyzmq"
    if quick:
        title += " (quick: a smoke run, not a measurement)"
    printed = Table(title=title)
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
        printed.add_column(name, justify=justify)  # type: ignore[arg-type]
    for line in rows:
        met = "" if line["met"] is None else ("yes" if line["met"] else "NO")
        ratio = "-" if line["ratio"] is None else f"{line['ratio']:.2f}x"
        printed.add_row(
            line["workload"],
            line["measure"],
            line["unit"],
            _number(line["ours"], line["unit"]),
            _number(line["anchor"], line["unit"]),
            ratio,
            line["target"],
            met,
        )
    return printed


def show(
    console: Console,
    rows: list[Row],
    quick: bool,
    transport: str,
    about: Mapping[str, Any],
    errors: list[str],
    started: datetime,
) -> None:
    """Prints the table, what failed, and the machine and versions it ran on."""
    console.print(table(rows, quick, transport))
    if about.get("curve"):
        console.print(
            "Rows 'with CURVE': ours on a bus secured with CURVE (ours column) against ours "
            "plain of the same run (anchor column)."
        )
    for failure in errors:
        console.print(f"[red]failed: {failure}")
    if transport == "nats":
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


def write_json(
    path: str,
    rows: list[Row],
    workloads: dict[str, Any],
    quick: bool,
    transport: str,
    sizes: Sizes,
    about: Mapping[str, Any],
    errors: list[str],
    started: datetime,
) -> None:
    """The ``--json`` report: every figure (no raw samples) and every verdict."""
    report = {
        "command": " ".join(["python -m shellbot.bench", *map(shown, sys.argv[1:])]),
        "date": started.isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "quick": quick,
        "transport": transport,
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        **about,
        "sizes": sizes.__dict__,
        "targets": verdicts(rows),
        "workloads": {key: slim(summary) for key, summary in workloads.items()},
        "errors": errors,
    }
    with open(path, "wb") as file:
        file.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def slim(result: Mapping[str, Any]) -> dict[str, Any]:
    """Without raw samples: the JSON report keeps figures, not every round trip."""
    return json.loads(  # type: ignore[no-any-return]
        json.dumps({k: v for k, v in result.items() if k not in ("rtts_ns", "acks_ns")})
    )
