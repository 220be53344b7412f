"""The benchmark's smoke run: every workload runs, on both sides, and reports numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shellbot.bench import WORKLOADS, _plan


@pytest.mark.timeout(150)
def test_quick_run_reports_every_workload(tmp_path: Path) -> None:
    report_file = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.bench", "--quick", "--json", str(report_file)],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(report_file.read_text())
    assert report["quick"] is True
    assert report["cores"] >= 1
    assert report["errors"] == []
    assert sorted(report["workloads"]) == sorted(WORKLOADS)
    for key, workload in report["workloads"].items():
        assert workload["rows"], key
        for row in workload["rows"]:
            assert isinstance(row["ours"], (int, float)), (key, row)
            if row["measure"] != "peak RSS, hub":  # the anchor has no hub
                assert isinstance(row["anchor"], (int, float)), (key, row)
    for key in ("T1", "T3", "T4", "T5"):
        assert report["workloads"][key]["ours"]["lost"] == 0, key
        assert report["workloads"][key]["ours"]["rate"] > 0, key
    assert report["workloads"]["T2"]["ours"]["p50_us"] > 0
    assert report["workloads"]["T7"]["ours"]["cpu_percent"] >= 0
    assert "T1" in completed.stdout


def test_unknown_workload_is_refused() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.bench", "--only", "T9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "T9" in completed.stdout


def test_rounds_go_round_by_round() -> None:
    """T5 is judged against T1: their rounds interleave, so machine drift weighs on both."""
    plan = [(workload.key, round_, side) for workload, round_, side in _plan(["T1", "T5", "T7"], 3)]
    assert plan == [
        (key, round_, side)
        for round_ in range(3)
        for key in ("T1", "T5")
        for side in ("anchor", "ours")
    ] + [("T7", 0, "anchor"), ("T7", 0, "ours")]
