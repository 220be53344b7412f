"""Durable delivery across a three-node JetStream cluster whose stream leader is killed."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _durable import durable_bus, durable_publisher, durable_reader, read_log
from _nats import NatsCluster
from conftest import eventually
from test_durable import stream_state, wait_report

spawn = multiprocessing.get_context("spawn")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster", jetstream=True)
    nodes.start(timeout=30.0)
    yield nodes
    nodes.stop()


def test_the_stream_has_three_replicas_on_a_cluster_by_default(cluster: NatsCluster) -> None:
    subscriber = durable_bus(cluster.address, start_timeout=20.0).subscribe("r", durable="r3")
    assert subscriber.wait_ready(30.0)
    state = stream_state(cluster.nodes[0])
    assert state["config"]["num_replicas"] == 3
    subscriber.close(forget=True)


def test_killing_the_stream_leader_loses_and_duplicates_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    per_publisher = 10_000  # two publishers at 500 msgs/s each: 1,000 msgs/s, 20,000 in all
    address = cluster.address
    reports = spawn.Queue()
    log = tmp_path / "reader.log"
    reader = spawn.Process(
        target=durable_reader, args=(address, "survivor", ["a", "b"], str(log), reports)
    )
    reader.start()
    assert wait_report(reports, "ready", timeout=60.0)[1]
    writers = [
        spawn.Process(
            target=durable_publisher, args=(address, channel, per_publisher, 500.0, reports)
        )
        for channel in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    assert eventually(lambda: len(read_log(log)) >= 4000, timeout=60.0)
    leader = cluster.stream_leader()
    assert leader is not None
    leader.kill()
    killed_at = len(read_log(log))
    publisher_reports = []
    reader_report = None
    deadline = time.monotonic() + 120.0
    while (len(publisher_reports) < 2 or reader_report is None) and time.monotonic() < deadline:
        report = wait_report(reports, "done", timeout=max(1.0, deadline - time.monotonic()))
        if isinstance(report[1], bool):
            publisher_reports.append(report)
        else:
            reader_report = report
    for process in (*writers, reader):
        process.join(10.0)
    assert reader_report is not None, "the reader did not finish"
    for _, confirmed, stats in publisher_reports:
        assert confirmed, stats
        assert stats["stored"] == per_publisher + 1 and stats["not_stored"] == 0
    handed = Counter(read_log(log))
    expected = Counter((channel, n) for channel in ("a", "b") for n in range(per_publisher))
    lost = expected - handed
    twice = {key: count for key, count in handed.items() if count > 1}
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:5]}"
    assert not twice, f"{len(twice)} handed twice, e.g. {sorted(twice)[:5]}"
    assert sum(handed.values()) == 2 * per_publisher
    # In order per publisher: each channel's numbers only go up in the reader's log.
    for channel in ("a", "b"):
        numbers = [n for c, n in read_log(log) if c == channel]
        assert numbers == sorted(numbers)
    stats = reader_report[1]
    print(
        f"stream leader {leader.name} killed after {killed_at} messages: 0 lost, 0 twice; "
        f"{stats['duplicates']} redelivered and dropped; publishers retried "
        f"{[r[2]['retried'] for r in publisher_reports]}"
    )
