"""The pytest plugin of shellbot.testing, as a user's test run sees it (pytester runs a
test file of a user's in a pytest of its own): each fixture works, and nothing any of
them started outlives the run, whether its tests passed, failed or timed out."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["pytester"]

# What a user's test file records: every pid it saw started, one a line.
RECORD = """
import os

def record(*pids):
    with open(os.environ["SHELLBOT_TEST_PIDS"], "a") as file:
        for pid in pids:
            file.write(f"{pid}\\n")
"""

USER_TESTS = (
    RECORD
    + """
import pytest
from shellbot.testing import SCHEMES


@pytest.mark.parametrize("bus", SCHEMES, indirect=True)
def test_a_message_on_every_transport(bus):
    first = bus()
    publisher = first.publish()
    publisher.start()
    if publisher.pid:
        record(publisher.pid)
    subscriber = bus(address=first.address).subscribe("bots.in")
    assert subscriber.wait_ready(10.0)
    publisher.put("bots.in", {"question": "lunch?"})
    assert subscriber.get(block=True, timeout=10.0) == {"question": "lunch?"}


def test_the_default_is_memory(bus):
    assert bus().address.startswith("memory://")
    assert bus("tcp").address != bus("tcp").address


def test_nats_server_has_jetstream(nats_server, bus):
    record(nats_server.process.pid)
    durable = bus("nats", durable=True)
    reader = durable.subscribe("orders", durable="kitchen")
    assert reader.wait_ready(10.0)
    publisher = durable.publish()
    publisher.put("orders", 1)
    assert reader.get(block=True, timeout=10.0) == 1
    assert durable.address == nats_server.url


def test_nats_cluster_carries_across_nodes(nats_cluster, bus):
    record(*(node.process.pid for node in nats_cluster.nodes))
    first, last = nats_cluster.nodes[0], nats_cluster.nodes[2]
    assert len(nats_cluster.address.split(",")) == 3
    subscriber = bus(address=last.url).subscribe("c")
    assert subscriber.wait_ready(10.0)
    bus(address=first.url).publish().put("c", "across")
    assert subscriber.get(block=True, timeout=10.0) == "across"
    assert bus(address=nats_cluster.address).subscribe("c").wait_ready(10.0)


def test_faults_on_a_node(nats_server, faults):
    record(nats_server.process.pid)
    faults.pause(nats_server)
    assert not nats_server.healthy()
    faults.resume(nats_server)
    assert nats_server.healthy()
    faults.kill(nats_server)
    assert not nats_server.running


def test_faults_on_a_hub_holder(bus, faults):
    holder = bus("tcp").publish()
    holder.start()
    record(holder.pid)
    assert holder.holds_hub
    faults.pause(holder)  # left paused: the end of the test resumes and stops it


def test_faults_kill_a_hub_holder(bus, faults):
    holder = bus("tcp").publish()
    holder.start()
    record(holder.pid)
    faults.kill(holder)
    assert not holder.is_alive()


def test_faults_refuse_a_publisher_of_this_process(bus, faults):
    publisher = bus("memory").publish()
    publisher.start()
    with pytest.raises(ValueError, match="process of its own"):
        faults.kill(publisher)
"""
)

FAILING_TESTS = (
    RECORD
    + """
import time
import pytest


def test_fails_with_everything_running(nats_server, nats_cluster, bus, faults):
    record(nats_server.process.pid, *(node.process.pid for node in nats_cluster.nodes))
    holder = bus("tcp").publish()
    holder.start()
    record(holder.pid)
    faults.pause(holder)
    assert False, "a user's test that fails"


@pytest.mark.timeout(5, method="thread")
def test_times_out_with_everything_running(nats_server, bus):
    record(nats_server.process.pid)
    holder = bus("ipc").publish()
    holder.start()
    record(holder.pid)
    nats = bus("nats").publish()
    nats.start()
    time.sleep(60)  # the timeout ends the whole run here, teardown or not
"""
)


def _recorded(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _left_running(pids: list[int], folder: Path, timeout: float = 10.0) -> list[str]:
    """What still runs, within ``timeout``: a recorded pid, or any process whose command
    line names the run's folder (a nats-server's configuration is there)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(process.info["cmdline"] or ())
            if process.info["pid"] in pids or str(folder) in command:
                left.append(f"{process.info['pid']}: {command}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def pids(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = pytester.path / "pids.txt"
    monkeypatch.setenv("SHELLBOT_TEST_PIDS", str(path))
    return path


def test_each_fixture_works_in_a_users_tests(pytester: pytest.Pytester, pids: Path) -> None:
    pytester.makepyfile(test_bots=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly", timeout=300)
    result.assert_outcomes(passed=12)
    started = _recorded(pids)
    assert len(started) >= 8  # servers, nodes and hub holders: what the run must end
    assert _left_running(started, pytester.path) == []


def test_nothing_outlives_a_failed_or_timed_out_run(pytester: pytest.Pytester, pids: Path) -> None:
    pytester.makepyfile(test_failing=FAILING_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly", timeout=300)
    # The first failed (F), the second timed out, which ended the run at once.
    result.stdout.fnmatch_lines(["F*Timeout*"])
    assert result.ret != 0
    started = _recorded(pids)
    assert len(started) == 7  # a node, 3 of a cluster, a holder; a node and a holder timed out
    assert _left_running(started, pytester.path) == []


def test_no_shellbot_turns_the_plugin_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_asks(bus):\n    pass\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:shellbot")
    result.stdout.fnmatch_lines(["*fixture 'bus' not found*"])
    assert pytester.runpytest_subprocess("-q").ret == 0
    assert os.environ.get("SHELLBOT_TEST_PIDS") is None
