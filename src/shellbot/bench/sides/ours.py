"""Ours: the bus, through its public API, in every process of a run.

Each process makes its own ``Context`` and ``Bus`` from the run's ``bus`` settings (an
address of its own on ZeroMQ; on NATS, the server and a subject prefix of its own).
A publisher calls ``publish().start()`` (on ZeroMQ the first one started holds the
hub) and ``put()``; subscribers ``subscribe()``, ``wait_ready()``, then ``get()``.
"""

from __future__ import annotations

import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

from ..harness import IDLE_END, OURS, WAIT, Cast, Crew, Report
from ..network import Network
from ..payload import STOP, message

if TYPE_CHECKING:
    from shellbot.bus import Bus


def bus(settings: dict[str, Any]) -> Bus:
    """The bus of one run: ``settings`` is its context's ``bus`` section."""
    from shellbot import Context
    from shellbot.bus import Bus

    bus = Bus(Context({"bus": settings}))
    bus.check()
    return bus


class Ours:
    """The bus's side of a run (``harness.Side``)."""

    name = OURS
    reports_hub = True

    def __init__(self, network: Network) -> None:
        self.network = network

    def start_flow(self, crew: Crew, cast: Cast) -> dict[str, Report]:
        # The first publisher is up (holding the hub, on ZeroMQ) before anyone joins.
        settings = self.network.bus()
        shape = cast.shape
        up: dict[str, Report] = {}
        for index, (name, channels) in enumerate(
            zip(cast.publishers, shape.publishers, strict=True)
        ):
            start = index == 0 or shape.every_publisher_starts
            crew.spawn(
                publisher,
                name,
                settings,
                channels,
                shape.per_publisher,
                start,
                cast.go,
                cast.done,
                crew.results,
                cast.tail if index == 0 else None,
            )
            if index == 0:
                up = crew.collect("up", 1)
        others = len(cast.publishers) - 1
        up.update(crew.collect("up", others) if others else {})
        for name, channels in zip(cast.subscribers, shape.subscribers, strict=True):
            crew.spawn(
                subscriber, name, settings, channels, cast.expected[name], None, crew.results
            )
        for name in cast.stalled:
            crew.spawn(
                subscriber,
                name,
                settings,
                cast.stalled_channels,
                cast.stalled_count,
                cast.stall,
                cast.stalled_results,
            )
        return up

    def start_ping_pong(self, crew: Crew, rounds: int, warmup: int, go: Event) -> None:
        settings = self.network.bus()
        crew.spawn(pinger, "pinger", settings, rounds, warmup, go, crew.results)
        crew.spawn(ponger, "ponger", settings, crew.results)

    def start_idle(self, crew: Crew, done: Event) -> dict[str, Report]:
        settings = self.network.bus()
        crew.spawn(idle_publisher, "publisher", settings, done, crew.results)
        up = crew.collect("up", 1)
        crew.spawn(idle_subscriber, "subscriber", settings, crew.results)
        return up


# -- the processes ----------------------------------------------------------------------


def publisher(
    name: str,
    settings: dict[str, Any],
    channels: list[str],
    count: int,
    start: bool,
    go: Event,
    done: Event,
    results: Queue[Any],
    tail: Event | None = None,
) -> None:
    """Puts ``count`` messages, cycling over ``channels``, once ``go`` is set; then one
    more when ``tail`` is set (a stalled subscriber sees its gap at the next message)."""
    publishing = bus(settings).publish()
    if start:
        publishing.start()
    results.put(("up", name, {"pid": os.getpid(), "hub_pid": publishing.pid}))
    if not go.wait(WAIT):
        return
    put, body = publishing.put, message
    width = len(channels)
    started = time.perf_counter()
    if width == 1:
        channel = channels[0]
        for counter in range(count):
            put(channel, body(counter))
    else:
        for counter in range(count):
            put(channels[counter % width], body(counter))
    ended = time.perf_counter()
    results.put(("sent", name, {"started": started, "ended": ended}))
    if tail is not None and tail.wait(WAIT):
        put(channels[0], message(count))
    done.wait(WAIT)
    if start:
        publishing.stop(timeout=5.0)  # its last act publishes the hub's final counters
        results.put(("hub", name, publishing.stats))


def subscriber(
    name: str,
    settings: dict[str, Any],
    channels: list[str],
    expected: int,
    stall: Event | None,
    results: Queue[Any],
) -> None:
    """Receives until ``expected`` messages came (or none came for a while)."""
    subscription = bus(settings).subscribe(channels)
    ready = subscription.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if stall is not None and not stall.wait(WAIT * 5):
        return
    get = subscription.get
    received = 0
    idle = 0.0
    while received < expected:
        if get(True, IDLE_END) is None:
            idle = IDLE_END  # the wait for what never came is not part of the run
            break
        received += 1
    ended = time.perf_counter() - idle
    stats = subscription.stats
    results.put(("result", name, {"received": received, "ended": ended, "stats": stats}))
    subscription.close()


def pinger(
    name: str, settings: dict[str, Any], rounds: int, warmup: int, go: Event, results: Queue[Any]
) -> None:
    """Starts its publisher (on ZeroMQ, the hub's holder); measures ``rounds`` round
    trips ping -> pong."""
    bus_ = bus(settings)
    publishing = bus_.publish()
    publishing.start()
    subscription = bus_.subscribe("pong")
    ready = subscription.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if not go.wait(WAIT):
        return
    put, get, clock = publishing.put, subscription.get, time.perf_counter_ns
    rtts = []
    for counter in range(warmup + rounds):
        started = clock()
        put("ping", message(counter))
        if get(True, 5.0) is None:
            break
        rtts.append(clock() - started)
    put("ping", message(STOP))
    results.put(("rtts", name, rtts[warmup:]))
    subscription.close()
    publishing.stop(timeout=5.0)


def ponger(name: str, settings: dict[str, Any], results: Queue[Any]) -> None:
    """Answers each ping with a pong, until the stop message."""
    bus_ = bus(settings)
    publishing = bus_.publish()  # put() needs no started process: the pinger's reaches the hub
    subscription = bus_.subscribe("ping")
    ready = subscription.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    put, get = publishing.put, subscription.get
    while True:
        received = get(True, WAIT)
        if received is None or received["counter"] == STOP:
            break
        put("pong", received)
    subscription.close()


def idle_subscriber(name: str, settings: dict[str, Any], results: Queue[Any]) -> None:
    """Blocks in ``get(block=True)`` until the message that ends the idle window."""
    subscription = bus(settings).subscribe("idle")
    ready = subscription.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    subscription.get(block=True)
    results.put(("result", name, {}))
    subscription.close()


def idle_publisher(name: str, settings: dict[str, Any], done: Event, results: Queue[Any]) -> None:
    """A started publisher (on ZeroMQ, the hub's holder), idle until ``done``, then ends
    the idle subscriber's wait."""
    publishing = bus(settings).publish()
    publishing.start()
    results.put(("up", name, {"pid": os.getpid(), "hub_pid": publishing.pid}))
    done.wait(WAIT * 5)
    publishing.put("idle", message(STOP))
    publishing.stop(timeout=5.0)
