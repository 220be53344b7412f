"""T9, a work queue: one publisher, a queue group of ``MEMBERS`` member processes.

Ours: a started publisher and members subscribed with ``group=``. The anchor on
ZeroMQ: a PUSH socket bound by the publisher and a PULL socket per member (ZeroMQ
deals round robin, with no credit: a stalled member keeps its share); on NATS,
bare nats-py queue subscriptions. Every member keeps how often each message
came to it; the run adds them up: delivered once, lost, twice, and the shares.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson
import zmq

from ..harness import IDLE_END, OURS, WAIT, Crew, RunFailed
from ..network import Network, free_ports, prefix, subject
from ..payload import message
from ..sides import nats as bare_nats
from ..sides import ours

MEMBERS = 8
CHANNEL = "jobs"


def work_queue(side: str, total: int, network: Network) -> dict[str, Any]:
    crew = Crew()
    go, done = crew.event(), crew.event()
    members = [f"member-{index}" for index in range(MEMBERS)]
    try:
        if side == OURS:
            settings = network.bus()
            crew.spawn(
                ours.publisher,
                "publisher",
                settings,
                [CHANNEL],
                total,
                True,
                go,
                done,
                crew.results,
            )
            crew.collect("up", 1)
            for name in members:
                crew.spawn(ours_member, name, settings, total, crew.results)
        elif network.on_nats:
            jobs = subject(prefix(), CHANNEL)
            crew.spawn(
                bare_nats.publisher,
                "publisher",
                network.url,
                [jobs],
                total,
                go,
                done,
                crew.results,
            )
            crew.collect("up", 1)
            for name in members:
                crew.spawn(nats_member, name, network.url, jobs, total, crew.results)
        else:
            port = free_ports(1)[0]
            crew.spawn(zmq_publisher, "publisher", port, total, go, done, crew.results)
            for name in members:
                crew.spawn(zmq_member, name, port, total, crew.results)
        ready = crew.collect("ready", MEMBERS)
        if not all(report["ready"] for report in ready.values()):
            raise RunFailed("a member was not ready in time")
        if side != OURS and not network.on_nats:
            up = crew.collect("up", 1)  # once every member's connection is in
            if not up["publisher"]["ready"]:
                raise RunFailed("the anchor's publisher did not see every member")
        go.set()
        sent = crew.collect("sent", 1, timeout=WAIT * 5)["publisher"]
        results = crew.collect("result", MEMBERS, timeout=WAIT * 5)
        done.set()
        hub = crew.collect("hub", 1, timeout=15.0) if side == OURS and not network.on_nats else {}
    finally:
        go.set()
        done.set()
        crew.close()
    counts = bytearray(total)
    shares = []
    for report in results.values():
        shares.append(report["received"])
        for index, times in enumerate(report["counts"]):
            if times:
                counts[index] = min(255, counts[index] + times)
    once = sum(1 for times in counts if times == 1)
    twice = sum(times - 1 for times in counts if times > 1)
    lost = counts.count(0)
    ended = max(report["ended"] for report in results.values())
    delivered = sum(shares)
    result: dict[str, Any] = {
        "rate": delivered / (ended - sent["started"]),
        "delivered": delivered,
        "once": once,
        "twice": twice,
        "lost": lost,
        "shares": sorted(shares),
        # a member that got nothing counts as one message: the spread shows it
        "spread": max(shares) / max(1, min(shares)),
        "seconds": ended - sent["started"],
    }
    if hub:
        result["hub"] = hub["publisher"]
    return result


def _count(counts: bytearray, counter: int) -> None:
    if 0 <= counter < len(counts) and counts[counter] < 255:
        counts[counter] += 1


def _report(results: Any, name: str, counts: bytearray, ended: float, stats: Any = None) -> None:
    received = sum(counts)
    report = {"received": received, "ended": ended, "counts": bytes(counts), "stats": stats}
    results.put(("result", name, report))


def ours_member(name: str, settings: dict[str, Any], total: int, results: Any) -> None:
    """Takes its share until none came for IDLE_END seconds."""
    subscriber = ours.bus(settings).subscribe(CHANNEL, group="bench")
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    counts = bytearray(total)
    get = subscriber.get
    ended = time.perf_counter()
    wait = WAIT  # for the first: the run begins once every member is ready
    while (received := get(True, wait)) is not None:
        _count(counts, received["counter"])
        ended = time.perf_counter()
        wait = IDLE_END
    _report(results, name, counts, ended, subscriber.stats)
    subscriber.close()


def zmq_publisher(name: str, port: int, total: int, go: Any, done: Any, results: Any) -> None:
    """The anchor on ZeroMQ: PUSH bound, sending once every member's PULL is connected."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    push.bind(f"tcp://127.0.0.1:{port}")
    joined, deadline = 0, time.monotonic() + WAIT
    while joined < MEMBERS and time.monotonic() < deadline:
        if monitor.poll(100):
            monitor.recv_multipart()
            joined += 1
    results.put(("up", name, {"pid": os.getpid(), "ready": joined == MEMBERS}))
    if go.wait(WAIT):
        send, dumps, body = push.send, orjson.dumps, message
        started = time.perf_counter()
        for counter in range(total):
            send(dumps(body(counter)))
        results.put(("sent", name, {"started": started, "ended": time.perf_counter()}))
        done.wait(WAIT)
    push.disable_monitor()
    monitor.close(linger=0)
    push.close(linger=5000)
    context.term()


def zmq_member(name: str, port: int, total: int, results: Any) -> None:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 0)
    pull.connect(f"tcp://127.0.0.1:{port}")
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    counts = bytearray(total)
    loads = orjson.loads
    ended = time.perf_counter()
    wait = int(WAIT * 1000)  # for the first: the run begins once all are ready
    while pull.poll(wait):
        _count(counts, loads(pull.recv())["counter"])
        ended = time.perf_counter()
        wait = int(IDLE_END * 1000)
    _report(results, name, counts, ended)
    pull.close(linger=0)
    context.term()


async def nats_member(name: str, url: str, jobs: str, total: int, results: Any) -> None:
    import nats

    client = await nats.connect(url, name="shellbot-bench-anchor")
    counts = bytearray(total)
    loads = orjson.loads
    received = 0
    ended = time.perf_counter()

    async def on_message(msg: Any) -> None:
        nonlocal received, ended
        _count(counts, loads(msg.data)["counter"])
        received += 1
        ended = time.perf_counter()

    await client.subscribe(
        jobs, queue="bench", cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0
    )
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    began = time.perf_counter()
    # Until none came for IDLE_END seconds, once the first came (the run begins when
    # every member is ready), or WAIT seconds with none at all.
    while True:
        await asyncio.sleep(0.1)
        now = time.perf_counter()
        if received and now - ended >= IDLE_END:
            break
        if not received and now - began >= WAIT:
            break
    _report(results, name, counts, ended)
    await client.close()
