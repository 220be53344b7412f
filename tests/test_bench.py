"""The benchmark's smoke run: every workload runs, on both sides, and reports numbers."""

from __future__ import annotations

import json
import os
import re
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


def test_without_psutil_both_entry_points_give_the_install_hint_on_one_line(
    tmp_path: Path,
) -> None:
    # A psutil that cannot be imported, as after an install without it.
    (tmp_path / "psutil.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psutil'\", name='psutil')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for command in (
        [sys.executable, "-m", "shellbot.bench", "--help"],
        [sys.executable, "-m", "shellbot.cli", "bench", "--quick"],
    ):
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        assert completed.returncode == 1, completed.stderr
        assert "Traceback" not in completed.stderr
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1, completed.stderr
        assert "pip install psutil" in lines[0] and "pip install '.[bench]'" in lines[0]


def test_the_distribution_has_a_name_of_its_own_and_every_hint_installs_this_project() -> None:
    """The name shellbot on PyPI is another project: installing it replaces this one."""
    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    assert re.search(r'^name = "shellbot-bus"$', pyproject, re.M)
    texts = [root / "README.md", *root.glob("docs/*.md"), *root.glob("src/shellbot/**/*.py")]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pip install (-U |--upgrade )?'?shellbot\b(?!-bus)", text), path
