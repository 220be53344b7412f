"""The benchmark's smoke run: every workload runs, on both sides, and reports numbers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _nats import NatsNode
from rich.console import Console

from shellbot.bench import WORKLOADS, _plan, _summarize, _table, _targets


def quick_bench(
    tmp_path: Path, *options: str, timeout: float
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``python -m shellbot.bench --quick OPTIONS --json FILE``, which must succeed: the
    run, and the report it wrote."""
    report_file = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.bench", "--quick", *options, "--json", str(report_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed, json.loads(report_file.read_text())


@pytest.mark.timeout(240)
def test_quick_run_reports_every_workload(tmp_path: Path) -> None:
    completed, report = quick_bench(tmp_path, timeout=230)
    assert report["quick"] is True
    assert report["cores"] >= 1
    assert report["errors"] == []
    # Every workload but JetStream's (T1d, on NATS only).
    assert sorted(report["workloads"]) == sorted(k for k, w in WORKLOADS.items() if not w.nats_only)
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
        [sys.executable, "-m", "shellbot.bench", "--only", "T99"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "T99" in completed.stdout


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


@pytest.mark.timeout(150)
def test_quick_run_on_nats_runs_both_sides_through_a_server_of_its_own(tmp_path: Path) -> None:
    completed, report = quick_bench(
        tmp_path, "--transport", "nats", "--only", "T1,T2,T5,T7", timeout=140
    )
    assert report["transport"] == "nats"
    assert report["errors"] == []
    assert report["nats_server_started"] is True
    assert report["nats_server"] and report["nats_py"]
    assert "bare nats-py" in completed.stdout and "nats-server" in completed.stdout
    # Both sides went through that server: the anchor one NATS message per message,
    # ours at most that many (runs joined under a backlog).
    for key, count in (("T1", 20_000), ("T5", 20_000)):
        for side in ("ours", "anchor"):
            for result in report["workloads"][key]["rounds"][side]:
                assert result["lost"] == 0, (key, side)
                assert 0 < result["server"]["in_msgs"] <= count, (key, side)
        anchor = report["workloads"][key]["rounds"]["anchor"]
        assert all(result["server"]["in_msgs"] == count for result in anchor), key
    assert report["workloads"]["T2"]["ours"]["p50_us"] > 0
    assert report["workloads"]["T2"]["anchor"]["p50_us"] > 0
    assert report["workloads"]["T7"]["anchor"]["processes"] == 3  # with the server
    # The NATS targets, with a verdict each; T5 is information.
    targets = report["targets"]
    assert targets["T1"]["throughput"]["target"] == ">= 0.9x anchor"
    assert targets["T2"]["round trip p50"]["target"] == "<= 1.5x anchor"
    assert "round trip p99" not in targets["T2"]
    assert set(targets["T5"]) == {"lost"}
    for measures in targets.values():
        for verdict in measures.values():
            assert isinstance(verdict["met"], bool)
    t1 = report["workloads"]["T1"]
    assert targets["T1"]["throughput"]["value"] == pytest.approx(
        t1["ours"]["rate"] / t1["anchor"]["rate"]
    )
    # The server is gone with the run.
    assert not psutil.pid_exists(report["nats_server_pid"]) or (
        psutil.Process(report["nats_server_pid"]).status() == psutil.STATUS_ZOMBIE
    )


@pytest.mark.timeout(60)
def test_a_benchmark_killed_on_nats_leaves_no_server() -> None:
    workers: list[psutil.Process] = []
    servers: list[psutil.Process] = []
    bench = subprocess.Popen(
        [sys.executable, "-m", "shellbot.bench", "--transport", "nats", "--only", "T7"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not servers and time.monotonic() < deadline:
            servers = [
                child
                for child in psutil.Process(bench.pid).children()
                if child.name().startswith("nats-server")
            ]
            time.sleep(0.05)
        assert servers, "the benchmark started no nats-server"
        workers = [
            child
            for child in psutil.Process(bench.pid).children(recursive=True)
            if child not in servers
        ]
        bench.kill()  # no clean-up of its own can run
        bench.wait(10)
        _, alive = psutil.wait_procs(servers, timeout=10)
        assert not alive
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        for process in [*servers, *workers]:  # what the killed benchmark could not stop
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_nats_targets_are_judged_against_bare_nats_py() -> None:
    def verdicts(key: str, ours: dict, anchor: dict) -> dict:
        return _targets(_summarize(key, ours, anchor, 100.0, nats=True))[key]

    assert verdicts("T1", {"rate": 91.0, "lost": 0}, {"rate": 100.0, "lost": 0})["throughput"][
        "met"
    ]
    assert not verdicts("T1", {"rate": 89.0, "lost": 0}, {"rate": 100.0, "lost": 0})["throughput"][
        "met"
    ]
    assert not verdicts("T3", {"rate": 95.0, "lost": 1}, {"rate": 100.0, "lost": 0})[
        "aggregate deliveries"
    ]["met"]
    t4 = verdicts("T4", {"rate": 90.0, "lost": 0}, {"rate": 100.0, "lost": 0})
    assert t4["throughput"]["met"] and "ours vs ours T1" not in t4
    assert set(verdicts("T5", {"rate": 10.0, "lost": 0}, {"rate": 100.0, "lost": 0})) == {"lost"}
    latency = {"p50_us": 140.0, "p99_us": 900.0}
    t2 = verdicts("T2", latency, {"p50_us": 100.0, "p99_us": 200.0})
    assert t2["round trip p50"] == {
        "target": "<= 1.5x anchor",
        "value": pytest.approx(1.4),
        "unit": "x",
        "met": True,
    }
    assert set(t2) == {"round trip p50"}  # p99: information
    assert not verdicts("T2", latency, {"p50_us": 90.0, "p99_us": 200.0})["round trip p50"]["met"]
    # ZeroMQ keeps its own targets.
    zmq_t1 = _targets(_summarize("T1", {"rate": 95.0, "lost": 0}, {"rate": 100.0, "lost": 0}, None))
    assert zmq_t1["T1"]["throughput"]["target"] == ">= 1.0x anchor"
    assert not zmq_t1["T1"]["throughput"]["met"]


def test_bad_nats_options_are_usage_errors() -> None:
    for options, hint in (
        (["--transport", "udp"], "choose zmq or nats"),
        (["--transport", "zmq", "--nats-url", "nats://127.0.0.1:4222"], "--transport nats"),
        (["--nats-url", "nats://127.0.0.1:1,nats://127.0.0.1:2"], "give one"),
        (["--nats-url", "http://127.0.0.1:4222"], "is not a NATS server"),
        (["--transport", "nats", "--only", "T1", "--nats-sync", "always"], "goes with T1d"),
        (["--only", "T1d", "--nats-url", "nats://127.0.0.1:1", "--nats-sync", "1s"], "T1d and"),
    ):
        completed = subprocess.run(
            [sys.executable, "-m", "shellbot.bench", *options],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 2, (options, completed.stdout, completed.stderr)
        assert hint in completed.stdout.replace("\n", " "), (options, completed.stdout)


@pytest.mark.parametrize(
    ("sync", "always", "interval"), [(None, None, 120), ("always", True, 120), ("10s", None, 10)]
)
def test_the_benchmarks_server_syncs_its_store_as_asked(
    sync: str | None, always: bool | None, interval: int
) -> None:
    from shellbot.bench._nats import NatsServer

    server = NatsServer(jetstream=True, sync=sync)
    server.start()
    try:
        config = (server.varz() or {})["jetstream"]["config"]
    finally:
        server.stop()
    assert config.get("sync_always") is always
    assert config["sync_interval"] == interval * 10**9


@pytest.mark.timeout(90)
def test_a_given_server_with_a_token_is_used_and_its_token_never_shown(tmp_path: Path) -> None:
    node = NatsNode(tmp_path / "nats", extra='authorization { token: "s3cret-t0ken" }')
    node.start()
    try:
        url = f"nats://s3cret-t0ken@127.0.0.1:{node.port}"
        completed, report = quick_bench(tmp_path, "--only", "T1", "--nats-url", url, timeout=80)
    finally:
        node.stop()
    assert report["nats_server_started"] is False
    assert report["nats_url"] == f"nats://***@127.0.0.1:{node.port}"
    t1 = report["workloads"]["T1"]
    assert t1["ours"]["lost"] == 0 and t1["anchor"]["lost"] == 0
    assert "server" not in t1["ours"]  # a server of the user's: its counters are not read
    for text in (completed.stdout, completed.stderr, (tmp_path / "bench.json").read_text()):
        assert "s3cret-t0ken" not in text


@pytest.mark.timeout(120)
def test_curve_adds_secured_rows_for_t1_and_t2_beside_the_plain_ones(tmp_path: Path) -> None:
    completed, report = quick_bench(tmp_path, "--only", "T1,T2", "--curve", timeout=110)
    for measure in ("throughput with CURVE", "round trip p50 with CURVE", "throughput"):
        assert measure in completed.stdout
    assert report["curve"] is True and report["errors"] == []
    t1, t2 = report["workloads"]["T1"], report["workloads"]["T2"]
    assert t1["curve"]["rate"] > 0 and t1["curve"]["lost"] == 0
    assert t2["curve"]["p50_us"] > 0
    assert report["targets"]["T1"]["throughput with CURVE"]["target"] == ">= 0.7x plain"
    assert report["targets"]["T2"]["round trip p50 with CURVE"]["target"] == "<= 1.3x plain"
    (row,) = [row for row in t1["rows"] if row["measure"] == "throughput with CURVE"]
    assert row["anchor"] == t1["ours"]["rate"]  # against the plain bus of the same run
    assert set(t1["rounds"]) == {"ours", "anchor", "curve"}


def test_curve_runs_in_the_same_rounds_and_only_on_zeromq() -> None:
    plan = [(workload.key, side) for workload, _, side in _plan(["T1", "T3"], 1, curve=True)]
    assert plan == [
        ("T1", "anchor"),
        ("T1", "ours"),
        ("T1", "curve"),
        ("T3", "anchor"),
        ("T3", "ours"),
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.bench", "--curve", "--transport", "nats"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "--curve" in completed.stdout


@pytest.mark.timeout(120)
def test_durable_t1_on_nats_stores_and_delivers_every_message_on_both_sides(
    tmp_path: Path,
) -> None:
    completed, report = quick_bench(tmp_path, "--transport", "nats", "--only", "t1d", timeout=110)
    assert report["errors"] == []
    assert list(report["workloads"]) == ["T1d"]
    sizes = report["sizes"]
    t1d = report["workloads"]["T1d"]
    for side in ("ours", "anchor"):
        summary = t1d[side]
        assert summary["delivered"] == sizes["durable"], side
        assert summary["lost"] == 0 and summary["not_stored"] == 0, side
        assert summary["disordered"] == 0, side
        assert summary["rate"] > 0, side
        # Every put of the paced run has its acknowledgement, in a sane time.
        assert summary["acknowledged"] == sizes["paced"], side
        assert 0 < summary["ack_p50_us"] <= summary["ack_p99_us"] < 5_000_000, side
        assert summary["paced"]["lost"] == 0 and summary["paced"]["unacknowledged"] == 0, side
        assert summary["first_ack_us"] > 0, side
        # Through the server: the anchor one JetStream message per message, ours at most.
        assert summary["server"]["in_msgs"] > 0, side
    assert t1d["ours"]["server"]["in_msgs"] <= t1d["anchor"]["server"]["in_msgs"]
    verdict = report["targets"]["T1d"]["throughput, stored"]
    assert verdict["target"] == ">= 0.9x anchor"
    assert verdict["value"] == pytest.approx(t1d["ours"]["rate"] / t1d["anchor"]["rate"])
    assert set(report["targets"]["T1d"]) == {"throughput, stored", "lost"}  # latency: information
    assert "put -> stored p99" in completed.stdout


def test_durable_t1_is_judged_on_what_was_stored_and_runs_on_nats_only() -> None:
    def verdicts(ours: dict, anchor: dict) -> dict:
        return _targets(_summarize("T1d", ours, anchor, None, nats=True))["T1d"]

    anchor = {"rate": 100.0, "lost": 0, "not_stored": 0, "ack_p50_us": 1.0, "ack_p99_us": 2.0}
    assert verdicts(anchor | {"rate": 91.0}, anchor)["throughput, stored"]["met"]
    assert not verdicts(anchor | {"rate": 89.0}, anchor)["throughput, stored"]["met"]
    unstored = verdicts(anchor | {"rate": 200.0, "not_stored": 1}, anchor)
    assert not unstored["throughput, stored"]["met"] and not unstored["lost"]["met"]
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.bench", "--only", "T1d"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "--transport nats" in completed.stdout


def test_t8_is_judged_on_its_p50_and_on_eight_requesters_per_transport() -> None:
    ours = {"p50_us": 200.0, "p99_us": 900.0, "rate": 5000.0, "concurrent_rate": 8000.0}
    anchor = {"p50_us": 100.0, "p99_us": 300.0, "rate": 9000.0, "concurrent_rate": 8000.0}
    on_zmq = _targets(_summarize("T8", ours, anchor, None))["T8"]
    assert (
        on_zmq["round trip p50"]["target"] == "<= 2.2x anchor" and on_zmq["round trip p50"]["met"]
    )
    assert on_zmq["requests/s, 8 requesters"]["met"]  # 1.0x
    assert set(on_zmq) == {"round trip p50", "requests/s, 8 requesters"}  # the rest: information
    on_nats = _targets(_summarize("T8", ours, anchor, None, nats=True))["T8"]
    assert on_nats["round trip p50"]["target"] == "<= 1.2x anchor"
    assert not on_nats["round trip p50"]["met"]
    slower = {**ours, "concurrent_rate": 7000.0}
    assert not _targets(_summarize("T8", slower, anchor, None))["T8"]["requests/s, 8 requesters"][
        "met"
    ]


@pytest.mark.timeout(150)
def test_quick_t8_on_nats_answers_every_request_on_both_sides(tmp_path: Path) -> None:
    completed, report = quick_bench(tmp_path, "--transport", "nats", "--only", "T8", timeout=140)
    assert report["errors"] == []
    t8 = report["workloads"]["T8"]
    for side in ("ours", "anchor"):
        assert t8[side]["round_trips"] >= 300 and t8[side]["concurrent_rate"] > 0, side
    assert "requests/s, 8 requesters" in completed.stdout


@pytest.mark.timeout(240)
@pytest.mark.parametrize("transport", ["zmq", "nats"])
def test_work_queue_deals_each_message_once_to_eight_members_on_both_sides(
    tmp_path: Path, transport: str
) -> None:
    _, report = quick_bench(tmp_path, "--only", "T1,T9", "--transport", transport, timeout=230)
    assert report["errors"] == []
    t9 = report["workloads"]["T9"]
    for side in ("ours", "anchor"):
        for result in t9["rounds"][side]:
            assert result["lost"] == result["twice"] == 0, side
            assert result["once"] == result["delivered"] == 20_000, side
            assert len(result["shares"]) == 8, side
    measures = {row["measure"] for row in t9["rows"]}
    assert {"ours vs ours T1", "largest share / smallest", "lost", "delivered twice"} <= measures
    assert set(report["targets"]["T9"]) == {
        "ours vs ours T1",
        "largest share / smallest",
        "lost",
        "delivered twice",
    }


def test_a_report_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path) -> None:
    for target, reason in [
        (tmp_path / "missing" / "x.json", "does not exist"),
        (tmp_path, "is a folder"),
    ]:
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "shellbot.bench", "--quick", "--json", str(target)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 2
        assert reason in completed.stdout and "Traceback" not in completed.stderr
        assert time.monotonic() - started < 20.0  # before any workload ran
