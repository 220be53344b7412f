"""The benchmark's smoke run: every workload runs, on both sides, and reports numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from shellbot.bench import WORKLOADS, _plan, _summarize, _table, _targets


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

    # Every target of the table is in "targets" with its verdict, and nothing else is.
    rows = [row for workload in report["workloads"].values() for row in workload["rows"]]
    judged = {(row["workload"], row["measure"]) for row in rows if row["met"] is not None}
    listed = {(key, measure) for key, measures in report["targets"].items() for measure in measures}
    assert listed == judged
    for key, measures in report["targets"].items():
        for measure, verdict in measures.items():
            assert set(verdict) == {"target", "value", "unit", "met"}, (key, measure)
            assert isinstance(verdict["met"], bool), (key, measure)
            assert verdict["target"], (key, measure)
    t5 = report["workloads"]["T5"]
    verdict = report["targets"]["T5"]["throughput"]
    assert verdict["target"] == ">= 1.2x anchor"
    assert verdict["unit"] == "x"
    assert verdict["value"] == pytest.approx(t5["ours"]["rate"] / t5["anchor"]["rate"])
    assert verdict["met"] is (verdict["value"] >= 1.2 and t5["ours"]["lost"] == 0)
    assert "ours vs ours T1" not in report["targets"]["T5"]  # information, not a target
    (share,) = [row for row in t5["rows"] if row["measure"] == "ours vs ours T1"]
    t1_rate = report["workloads"]["T1"]["ours"]["rate"]
    assert share["ratio"] == pytest.approx(t5["ours"]["rate"] / t1_rate)

    # The quick table fills its met column too: one verdict per target, in the last cell.
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in completed.stdout.splitlines()
        if line.startswith("│ T")
    ]
    assert len(cells) == len(rows)
    verdicts = [line[-1] for line in cells if line[-1]]
    assert len(verdicts) == len(judged)
    assert set(verdicts) <= {"yes", "NO"}


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
    """T4 is judged against T1 and T5 shown against it: their rounds interleave, so machine
    drift weighs on both."""
    plan = [(workload.key, round_, side) for workload, round_, side in _plan(["T1", "T5", "T7"], 3)]
    assert plan == [
        (key, round_, side)
        for round_ in range(3)
        for key in ("T1", "T5")
        for side in ("anchor", "ours")
    ] + [("T7", 0, "anchor"), ("T7", 0, "ours")]


def test_t5_is_judged_against_the_anchor_not_our_t1() -> None:
    """T5 against our T1 falls when put() gets faster: it is shown, not judged."""
    fast_put = _summarize("T5", {"rate": 260.0, "lost": 0}, {"rate": 200.0, "lost": 0}, 400.0)
    slow_hub = _summarize("T5", {"rate": 220.0, "lost": 0}, {"rate": 200.0, "lost": 0}, 230.0)
    lossy = _summarize("T5", {"rate": 300.0, "lost": 1}, {"rate": 200.0, "lost": 0}, 300.0)
    assert _targets(fast_put)["T5"]["throughput"] == {
        "target": ">= 1.2x anchor",
        "value": pytest.approx(1.3),
        "unit": "x",
        "met": True,
    }
    assert _targets(slow_hub)["T5"]["throughput"]["met"] is False  # 0.96x of T1, 1.1x the anchor
    assert _targets(lossy)["T5"]["throughput"]["met"] is False
    for rows in (fast_put, slow_hub, lossy):
        (share,) = [row for row in rows if row["measure"] == "ours vs ours T1"]
        assert share["met"] is None and share["target"] == "(information)"
        assert set(_targets(rows)["T5"]) == {"throughput", "lost"}
    (share,) = [row for row in fast_put if row["measure"] == "ours vs ours T1"]
    assert share["ratio"] == pytest.approx(0.65)


def test_quick_table_shows_verdicts() -> None:
    rows = _summarize("T5", {"rate": 260.0, "lost": 0}, {"rate": 200.0, "lost": 0}, 400.0)
    console = Console(width=160, record=True)
    console.print(_table(rows, quick=True))
    text = console.export_text()
    assert "smoke run" in text
    cells = [line.split("│") for line in text.splitlines() if line.startswith("│ T5")]
    met = {cell[2].strip(): cell[-2].strip() for cell in cells}
    assert met["throughput"] == "yes" and met["lost"] == "yes"
    assert met["ours vs ours T1"] == ""


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
