"""Code run in other processes by the tests: importable by name, so spawn can find it."""

from __future__ import annotations

import json
import time
from typing import Any

from shellbot import Context
from shellbot.bus import Bus


def direct_listener(address: str, channel: str, ready: Any, results: Any) -> None:
    """A direct channel: collects what is sent to it until 'end', then reports it."""
    bus = Bus(Context({"bus": {"address": address}}))
    subscriber = bus.subscribe(channel)
    ready.put((channel, subscriber.wait_ready(timeout=10.0)))
    received = []
    while True:
        message = subscriber.get(block=True, timeout=10.0)
        if message is None or message == "end":
            break
        received.append(message)
    results.put((channel, received, subscriber.stats))


def direct_reporter(address: str, channel: str, count: int) -> None:
    """A direct channel with a bus and a publisher of its own, as in the second pattern."""
    bus = Bus(Context({"bus": {"address": address}}))
    publisher = bus.publish()
    publisher.start()
    for index in range(count):
        publisher.put(channel, {"from": channel, "counter": index})
    publisher.fan.put(None)
    publisher.join(timeout=10.0)


def publisher_tool(address: str, channel: str, count: int) -> None:
    """The original's publisher tool: puts, queues a pill, then starts and joins."""
    Context.set_logger()
    bus = Bus(Context({"bus": {"address": address}}))
    bus.check()
    publisher = bus.publish()
    for index in range(count):
        publisher.put(channel, index)
    publisher.fan.put(None)
    publisher.start()
    publisher.join()  # returns once the pill arrived, after the messages


def put_with(publisher: Any, channel: str, count: int) -> None:
    """Publishes through a publisher object made by another process."""
    for index in range(count):
        publisher.put(channel, index)


def read_setting(context: Any, go: Any, results: Any) -> None:
    """Reports a setting the parent changes once this process is running."""
    results.put(("started", None))
    go.wait(10.0)
    results.put(("value", context.get("shared.value")))


def brief_requester(address: str, channel: str) -> None:
    """Asks once, gives up at once, and leaves: its answer finds no one."""
    bus = Bus(Context({"bus": {"address": address}}))
    bus.request_all(channel, "anyone?", timeout=0.05)


def group_member(address: str, group: str, path: str, stall_after: int | None, ready: Any) -> None:
    """A queue group's member: writes each message it takes to ``path`` (one per line, at
    once), and stops taking after ``stall_after`` (holding its share) or when idle 2 s."""
    bus = Bus(Context({"bus": {"address": address}}))
    subscriber = bus.subscribe("jobs", group=group)
    ready.put(subscriber.wait_ready(timeout=10.0))
    taken = 0
    with open(path, "a", buffering=1) as out:
        while stall_after is None or taken < stall_after:
            message = subscriber.get(block=True, timeout=2.0)
            if message is None:
                break
            out.write(f"{message}\n")
            taken += 1
        if stall_after is not None:
            ready.put("stalled")
            time.sleep(60)  # holding what it was sent, until killed
    subscriber.close()


def work_queue_member(address: str, path: str, idle: float, ready: Any) -> None:
    """A durable queue group's member (group and durable 'jobs', bus.ack_wait 2 s): does
    each job (a short sleep), then writes it to ``path``; ends once idle for ``idle`` s,
    writing its stats beside."""
    bus = Bus(Context({"bus": {"address": address, "ack_wait": 2.0}}))
    subscriber = bus.subscribe("jobs", group="jobs", durable="jobs")
    ready.put(subscriber.wait_ready(timeout=20.0))
    with open(path, "a", buffering=1) as out:
        while (job := subscriber.get(block=True, timeout=idle)) is not None:
            time.sleep(0.0005)
            out.write(f"{job['job']}\n")
    with open(path + ".stats", "w") as out:
        out.write(json.dumps(subscriber.stats))
    subscriber.close()
