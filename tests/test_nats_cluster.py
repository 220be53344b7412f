"""nats:// on servers that fail or lag: readiness proven on every node of a cluster, a
node killed under traffic, a client cut off, no server at all, a subscriber that falls
behind. Whatever is lost is counted in ``stats['missed']``, never silent.

Every test starts its own nats-server processes (``_nats``) on free loopback ports, and
runs the bus in spawned processes, as programs would: each has its own connections,
and the test process keeps none to servers that are gone once the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _nats
import nats
import pytest
from _nats import LaggingRelay, NatsCluster, NatsNode, free_port

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes with routes to each other, stopped after the test."""
    cluster = NatsCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Children:
    """Programs of a test, each in a spawned process, and their answers."""

    def __init__(self) -> None:
        self.processes: list[Any] = []

    def start(self, target: Callable[..., Any], *args: Any) -> Any:
        # Not a daemon: a program's Context starts a process of its own.
        child = SPAWN.Process(target=target, args=args)
        child.start()
        self.processes.append(child)
        return child

    def take(self, source: Any, timeout: float = 20.0) -> Any:
        """The next answer on a queue or a pipe, within ``timeout`` seconds; fails at
        once when a program died of an error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if isinstance(source, Connection):
                if source.poll(0.1):
                    return source.recv()
            else:
                with contextlib.suppress(queue.Empty):
                    return source.get(timeout=0.1)
            failed = [child.exitcode for child in self.processes if child.exitcode]
            assert not failed, f"a program ended with exit code {failed[0]}"
        raise AssertionError(f"no answer in {timeout} s")

    def end(self) -> None:
        """A few seconds to end (a publisher flushes at exit), then kill -9."""
        deadline = time.monotonic() + 5.0
        for child in self.processes:
            child.join(max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(5.0)


@pytest.fixture
def spawn() -> Iterator[Children]:
    children = Children()
    yield children
    children.end()


# -- readiness ------------------------------------------------------------------------------


def test_ready_on_one_node_means_ready_on_every_node(cluster: NatsCluster, spawn: Children) -> None:
    """A subscriber on node 1 and a publisher on node 2 (each given its node alone, so
    they surely sit on two nodes): after ``wait_ready()``, the first message put at once
    on node 2 arrives, every round; and each round a copy of the probe came back
    through each of the 3 nodes, the two the subscriber learnt of from the cluster."""
    first, second, _ = cluster.nodes
    results = SPAWN.Queue()
    # Both connections in one process: the put follows wait_ready() with no hop between
    # programs in between, which would give the interest time to spread anyway.
    spawn.start(_nats.first_messages, first.url, second.url, 40, results)
    rows = spawn.take(results, 60)
    assert [ready for ready, *_ in rows] == [True] * 40
    assert [arrived for _, arrived, *_ in rows] == [True] * 40
    # Rounds 0-19 each on a new connection: a probe sent before it was connected
    # counted for nothing (which nodes to hear from was not known yet).
    assert [(needed, back) for _, _, needed, back, _ in rows] == [(3, 3)] * 40


async def _flush_then_publish(near: str, far: str) -> bool:
    """What a plain NATS client takes for readiness: subscribe on ``near`` and flush,
    then publish at once on ``far``. True when that first message arrived."""
    subscriber = await nats.connect(near, allow_reconnect=False)
    publisher = await nats.connect(far, allow_reconnect=False)
    try:
        subscription = await subscriber.subscribe("plain.first")
        await subscriber.flush()
        await publisher.publish("plain.first", b"first")
        await publisher.flush()
        try:
            await subscription.next_msg(timeout=1.0)
            return True
        except nats.errors.TimeoutError:
            return False
    finally:
        await subscriber.close()
        await publisher.close()


def test_readiness_waits_for_the_interest_to_reach_a_far_node(
    tmp_path: Path, spawn: Children
) -> None:
    """Node 2 reaches node 1 through a link that holds every byte 0.2 s, so a
    subscription on node 1 is known on node 2 that much later. A flush on node 1 proves
    nothing there: a plain client's first message from node 2 is lost. ``wait_ready()``
    waits until its probe came back through node 2, so no first message is lost."""
    delay = 0.2
    near_routes = free_port()
    first = NatsNode(tmp_path, "n1", cluster_port=near_routes)
    relay = LaggingRelay(near_routes, delay)
    second = NatsNode(tmp_path, "n2", cluster_port=free_port(), routes=[relay.port])
    try:
        first.start()
        relay.start()
        second.start()
        deadline = time.monotonic() + 20.0
        while not (first.routes() and second.routes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.routes() and second.routes(), "no route between the two nodes"
        assert not asyncio.run(_flush_then_publish(first.url, second.url))
        results = SPAWN.Queue()
        spawn.start(_nats.first_messages, first.url, second.url, 6, results)
        rows = spawn.take(results, 60)
        assert [row[:4] for row in rows] == [(True, True, 2, 2)] * 6
        # The probe through node 2 came back only once the interest had crossed the link.
        assert min(took for *_, took in rows) >= delay
        spawn.end()  # while the servers are up: the program flushes at exit
    finally:
        second.stop()
        relay.stop()
        first.stop()


# -- a node killed ---------------------------------------------------------------------


def test_a_node_killed_under_traffic_costs_a_counted_gap(
    cluster: NatsCluster, spawn: Children
) -> None:
    """kill -9 of the node a publisher (1,000 msgs/s) and a subscriber are both on:
    delivery resumes through another node within 5 s, with nothing done by either
    program, and received + missed is what was published, exactly. The node, started
    again, is back in the cluster, and a client on it gets what is put on another."""
    first, second, _ = cluster.nodes
    stop, killed = SPAWN.Event(), SPAWN.Event()
    reports, published = SPAWN.Queue(), SPAWN.Queue()
    # Both given node 1 alone: where they go next, they learnt from the cluster.
    spawn.start(_nats.stream_reader, first.url, "stream", killed, reports)
    assert spawn.take(reports, 20) == ("ready", True)
    spawn.start(_nats.paced_publisher, first.url, "stream", stop, published)
    assert spawn.take(reports, 20) == ("flowing", 300)
    first.kill()
    killed.set()
    assert spawn.take(reports, 20)[0] == "resumed"
    # The end goes once delivery resumed: its number closes the last gap.
    stop.set()
    total = spawn.take(published, 20)
    kind, received, stats, gap, in_order = spawn.take(reports, 20)
    assert kind == "done"
    assert gap < 5.0, f"{gap:.2f} s without a message"
    assert in_order
    assert stats["received"] == received + 1  # and the end
    assert stats["received"] + stats["missed"] == total
    assert stats["dropped"] == 0

    first.start()
    cluster.wait_routes()
    assert first.healthy()
    assert first.routes() >= 2
    results = SPAWN.Queue()
    spawn.start(_nats.first_messages, first.url, second.url, 4, results)
    rows = spawn.take(results, 60)
    assert [row[:4] for row in rows] == [(True, True, 3, 3)] * 4


# -- cut off, and no server --------------------------------------------------------------


def test_cut_off_put_keeps_a_bounded_queue_and_refuses_past_it(
    nats_server: NatsNode, spawn: Children
) -> None:
    """With its only server killed, a process's put() keeps what it publishes, up to
    ``bus.send_high_water_mark`` (100), at once; one more waits ``bus.send_timeout``
    (1 s) and raises TimeoutError, naming the address. The server back on its port,
    the 100 arrive (the subscriptions of the connection are renewed before its queue
    leaves), and the refused one left no gap."""
    conn, child_end = SPAWN.Pipe()
    spawn.start(_nats.cut_off, nats_server.url, 100, 1.0, child_end)
    assert spawn.take(conn, 20) is True
    nats_server.kill()
    conn.send("killed")
    connected, put_took, refused, refused_took, ready, ready_took = spawn.take(conn, 20)
    assert not connected
    assert put_took < 1.0
    assert nats_server.url in refused and "bus.send_timeout" in refused
    assert 0.9 <= refused_took < 3.0
    # Readiness cannot be proven while cut off, and says so within its own timeout.
    assert ready is False and ready_took < 0.9
    nats_server.start()
    conn.send("back")
    kept, after, stats = spawn.take(conn, 30)
    assert kept == list(range(100))
    assert after == "after"
    assert stats == {"received": 101, "dropped": 0, "missed": 0}


def test_no_server_at_the_address_fails_within_start_timeout(spawn: Children) -> None:
    """Nothing listens at the address: ``Publisher.start()`` raises TimeoutError after
    ``bus.start_timeout`` (1 s), not the client's minute of retries, and says where;
    ``wait_ready(0.5)`` is False in about that time."""
    address = f"nats://127.0.0.1:{free_port()}"
    results = SPAWN.Queue()
    spawn.start(_nats.no_server, address, results)
    outcome, start_took, ready, wait_took = spawn.take(results, 30)
    assert outcome.startswith("TimeoutError") and address in outcome
    assert "bus.start_timeout" in outcome
    assert 0.9 <= start_took < 3.0
    assert ready is False
    assert wait_took < 1.5


# -- a subscriber behind -----------------------------------------------------------------


def test_a_subscriber_behind_loses_the_newest_and_counts_them(
    nats_server: NatsNode, spawn: Children
) -> None:
    """Two subscribers of one burst on one server, each in its own process. One reads
    nothing until the burst is over: its process keeps reading the socket (so the
    server sees no slow consumer) and its inbox, past ``bus.receive_high_water_mark``
    (50 frames), drops the newest. It keeps the oldest, in order, and once ``'end'``
    came, received + missed is what was published; the one beside it loses nothing."""
    count, limit = 2000, 50
    url = nats_server.url
    publisher, publisher_end = SPAWN.Pipe()
    held, held_end = SPAWN.Pipe()
    reports = SPAWN.Queue()
    spawn.start(_nats.reader, url, "burst", reports)
    spawn.start(_nats.held_reader, url, "burst", "sync", limit, held_end)
    spawn.start(_nats.burst_publisher, url, publisher_end)
    assert spawn.take(reports, 20) == ("ready", True)
    assert spawn.take(held, 20) is True
    assert spawn.take(publisher, 20) == "ready"
    # 1 kB messages: a NATS message joins at most 8 of them, so the burst is
    # hundreds of frames, well past 50.
    publisher.send(("burst", count, 1000))
    assert spawn.take(publisher, 30) == "done"
    publisher.send(("sync", "now"))  # after the burst, on the same connection
    assert spawn.take(publisher, 10) == "done"
    came, _ = spawn.take(held, 30)
    assert came == "now"
    publisher.send(("burst", "end"))
    assert spawn.take(publisher, 10) == "done"
    kept, end, stats = spawn.take(held, 20)
    kind, numbers, fast_end, fast_stats = spawn.take(reports, 30)
    publisher.send(None)

    assert kind == "done" and fast_end == "end"
    assert numbers == list(range(count))
    assert fast_stats == {"received": count + 1, "dropped": 0, "missed": 0}
    assert end == "end"
    assert 0 < len(kept) < count
    assert kept == list(range(len(kept)))  # the oldest kept; the newest lost, alone
    assert stats["missed"] == count - len(kept)
    assert stats["received"] + stats["missed"] == count + 1


def test_a_subscriber_stopped_is_cut_off_by_the_server_and_counts_the_loss(
    tmp_path: Path, spawn: Children
) -> None:
    """A subscriber whose process is stopped (SIGSTOP) reads nothing, not even its
    socket: once a write to it has waited the server's write_deadline (2 s here), the
    server closes it as a slow consumer, and the subscriber beside it loses nothing.
    Continued, the stopped one reads what its socket still held (the oldest, in order),
    reconnects and subscribes again by itself; once ``'end'`` came, received + missed
    is what was published."""
    count = 20_000  # 1 kB each: far more than the socket buffers between the two hold
    node = NatsNode(tmp_path / "nats", extra='write_deadline: "2s"')
    try:
        node.start()
        fast_reports, stopped_reports = SPAWN.Queue(), SPAWN.Queue()
        publisher, publisher_end = SPAWN.Pipe()
        spawn.start(_nats.reader, node.url, "burst", fast_reports)
        stopped = spawn.start(_nats.reader, node.url, "burst", stopped_reports)
        spawn.start(_nats.burst_publisher, node.url, publisher_end)
        assert spawn.take(fast_reports) == ("ready", True)
        assert spawn.take(stopped_reports) == ("ready", True)
        assert spawn.take(publisher) == "ready"
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            publisher.send(("burst", count, 1000))
            assert spawn.take(publisher, 30) == "done"
            deadline = time.monotonic() + 15.0
            while not node.monitor("/varz").get("slow_consumers") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert node.monitor("/varz").get("slow_consumers") == 1
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        # 'end' once the stopped one subscribes again, so that it surely comes.
        deadline = time.monotonic() + 15.0
        while node.subscribed("shellbot.c.burst") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert node.subscribed("shellbot.c.burst") == 2
        publisher.send(("burst", "end"))
        assert spawn.take(publisher) == "done"
        kind, numbers, end, stats = spawn.take(fast_reports, 30)
        assert (kind, end) == ("done", "end")
        assert numbers == list(range(count))
        assert stats == {"received": count + 1, "dropped": 0, "missed": 0}
        kind, numbers, end, stats = spawn.take(stopped_reports, 30)
        assert (kind, end) == ("done", "end")
        assert 0 < len(numbers) < count
        assert numbers == list(range(len(numbers)))
        assert stats["missed"] == count - len(numbers)
        assert stats["received"] + stats["missed"] == count + 1
        publisher.send(None)
        spawn.end()  # while the server is up: a publisher flushes at exit
    finally:
        node.stop()
