"""One run of a workload on one side, in fresh processes: the crew that starts them and
collects their reports, and the three shapes of run every side plays (a flow of
messages, a ping-pong, an idle wait), written once over the ``Side`` protocol.

Processes report on the crew's queue as ``(kind, name, payload)`` tuples: ``up`` once
bound or started, ``ready`` once subscriptions are live, then ``sent``, ``result``,
``rtts`` or ``hub``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
import queue
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, Protocol

import psutil

from .network import SERVER_COUNTERS, ZEROMQ, Network

OURS, ANCHOR = "ours", "anchor"
CURVE = "curve"  # ours secured with CURVE (--curve), judged against ours plain
WAIT = 60.0  # the longest any step of a run waits for another process
IDLE_END = 3.0  # a receiver that got nothing for this long stops and reports what it has
SAMPLE_INTERVAL = 0.05  # how often RSS is read while a memory workload runs
# Seconds from a stalled subscriber's resumption to the message that shows it its gap, on
# NATS: bare nats-py takes about 0.5 s to read the 34,000 messages its socket held (T6).
TAIL_DELAY_NATS = 2.0

Report = dict[str, Any]


class RunFailed(RuntimeError):
    """A process of the run did not do its part in time."""


def _run_coroutine(function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """A process whose work is a coroutine (the nats-py anchors): its event loop."""
    asyncio.run(function(*args))


class Crew:
    """The processes of one run, the queue they report on, and their clean-up."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.results: Queue[Any] = self._context.Queue()
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._kept: list[tuple[str, str, Any]] = []

    def event(self) -> Event:
        return self._context.Event()

    def queue(self) -> Queue[Any]:
        """A report queue of its own, for processes that get frozen (SIGSTOP): frozen
        while its feeder thread holds the queue's lock, a process would block every
        other writer of a shared queue."""
        return self._context.Queue()

    def spawn(self, target: Callable[..., Any], *args: Any) -> None:
        """Starts ``target(*args)`` in a process of its own; a coroutine function runs
        in an event loop of that process."""
        if inspect.iscoroutinefunction(target):
            target, args = _run_coroutine, (target, *args)
        # Not daemonic: a worker starts processes of its own (a publisher, a context manager).
        process = self._context.Process(target=target, args=args)
        process.start()
        self._processes.append(process)

    def collect(
        self,
        kind: str,
        count: int,
        timeout: float = WAIT,
        tick: Callable[[], None] | None = None,
        source: Queue[Any] | None = None,
    ) -> dict[str, Any]:
        """The payloads of ``count`` reports of ``kind``, by process name."""
        found: dict[str, Any] = {}
        for report in list(self._kept):
            if report[0] == kind and len(found) < count:
                self._kept.remove(report)
                found[report[1]] = report[2]
        deadline = time.monotonic() + timeout
        while len(found) < count:
            if tick is not None:
                tick()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunFailed(
                    f"waited {timeout:.0f} s for {count} '{kind}' reports, got {len(found)}"
                )
            wait = min(remaining, SAMPLE_INTERVAL) if tick is not None else min(remaining, 1.0)
            try:
                report = (source or self.results).get(timeout=wait)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in self._processes):
                    raise RunFailed(
                        f"a process of the run failed while waiting for '{kind}'"
                    ) from None
                continue
            if report[0] == kind:
                found[report[1]] = report[2]
            else:
                self._kept.append(report)
        return found

    def close(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                process.terminate()
                process.join(2.0)
        self.results.close()
        self.results.join_thread()


@dataclass
class Flow:
    """The shape of a throughput workload."""

    publishers: list[list[str]]  # the channels each publisher cycles over
    subscribers: list[list[str]]  # the channels of each live subscriber
    per_publisher: int  # messages each publisher puts
    stalled: int = 0  # subscribers (of the first publisher's channels) that stop reading
    every_publisher_starts: bool = False  # ours: each publisher starts its process (fan-in)
    anchor_high_water_mark: int = 0  # 0: the anchor keeps every message, as ours must
    sample_rss: bool = False
    freeze_stalled: bool = False  # stalled subscribers are stopped (SIGSTOP), socket and all


@dataclass(frozen=True)
class Cast:
    """The processes of one flow, by name, and the events and queues they share."""

    shape: Flow
    publishers: list[str]
    subscribers: list[str]
    stalled: list[str]
    expected: dict[str, int]  # messages each live subscriber is due
    go: Event  # publishers start
    done: Event  # publishers end
    stall: Event  # stalled subscribers read again
    tail: Event | None  # the first publisher puts the message that shows a gap
    results: Queue[Any]
    stalled_results: Queue[Any] | None  # stalled subscribers report here (they get frozen)

    @property
    def stalled_channels(self) -> list[str]:
        return self.shape.publishers[0]

    @property
    def stalled_count(self) -> int:
        return self.shape.per_publisher + 1  # and the tail message


class Side(Protocol):
    """One side of a run (ours, or an anchor): the processes it starts for each shape
    of run. Made for one run: it holds that run's addresses."""

    name: str  # OURS or ANCHOR
    reports_hub: bool  # its started publishers report the hub's counters at the end

    def start_flow(self, crew: Crew, cast: Cast) -> dict[str, Report]:
        """Starts every process of ``cast``; returns the publishers' ``up`` reports
        (``pid``, and ``hub_pid`` where a publisher holds a hub process)."""
        ...

    def start_ping_pong(self, crew: Crew, rounds: int, warmup: int, go: Event) -> None:
        """Starts the ``pinger`` (reports ``rtts``) and the ``ponger``."""
        ...

    def start_idle(self, crew: Crew, done: Event) -> dict[str, Report]:
        """Starts an idle ``publisher`` and ``subscriber``; returns the publisher's ``up``."""
        ...


def flow(side: Side, shape: Flow, network: Network = ZEROMQ) -> dict[str, Any]:
    """Runs a throughput workload; returns rate, losses and (when sampled) peak RSS.

    On NATS, "hub" is the server's process (when the benchmark started it), on both
    sides: the broker is what holds a stalled subscriber's backlog there."""
    crew = Crew()
    publishers = [f"publisher-{index}" for index in range(len(shape.publishers))]
    subscribers = [f"subscriber-{index}" for index in range(len(shape.subscribers))]
    cast = Cast(
        shape,
        publishers,
        subscribers,
        [f"stalled-{index}" for index in range(shape.stalled)],
        {
            name: shape.per_publisher
            * sum(1 for channels in shape.publishers if set(channels) & set(subscribed))
            for name, subscribed in zip(subscribers, shape.subscribers, strict=True)
        },
        crew.event(),
        crew.event(),
        crew.event(),
        crew.event() if shape.stalled else None,
        crew.results,
        crew.queue() if shape.stalled else None,
    )
    stalled, tail = cast.stalled, cast.tail
    peak = {"publisher": 0, "hub": 0}
    watched: dict[str, list[psutil.Process]] = {"publisher": [], "hub": []}

    def sample() -> None:
        for role, processes in watched.items():
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    peak[role] = max(peak[role], process.memory_info().rss)

    server = network.server_process() if network.on_nats else None
    if server is not None:
        watched["hub"] = [server]
    try:
        up = side.start_flow(crew, cast)
        first = up[publishers[0]]
        watched["publisher"] = [psutil.Process(first["pid"])]
        if first.get("hub_pid") and not network.on_nats:
            watched["hub"] = [psutil.Process(first["hub_pid"])]
        ready = crew.collect("ready", len(subscribers))
        if stalled:
            ready.update(crew.collect("ready", len(stalled), source=cast.stalled_results))
        if not all(report["ready"] for report in ready.values()):
            raise RunFailed("a subscriber was not ready in time")
        frozen = []
        if shape.freeze_stalled:
            frozen = [psutil.Process(ready[name]["pid"]) for name in stalled]
            for process in frozen:
                process.suspend()
        sample()
        counted = network.counters()
        cast.go.set()
        tick = sample if shape.sample_rss else None
        sent = crew.collect("sent", len(publishers), timeout=WAIT * 5, tick=tick)
        live = crew.collect("result", len(subscribers), timeout=WAIT * 5, tick=tick)
        sample()
        after = network.counters()
        for process in frozen:
            process.resume()
        cast.stall.set()
        if tail is not None:
            # The stalled subscriber reads again; a message published after that shows
            # it what it missed meanwhile (gaps are seen at the next message). On NATS the
            # server has cut it off meanwhile (a slow consumer): it reads what its socket
            # still holds, then reconnects and subscribes again, before the last message.
            time.sleep(TAIL_DELAY_NATS if network.on_nats else 0.5)
            tail.set()
        late = crew.collect("result", len(stalled), source=cast.stalled_results) if stalled else {}
        cast.done.set()
        holders = len(publishers) if shape.every_publisher_starts else 1
        hub = crew.collect("hub", holders, timeout=15.0) if side.reports_hub else {}
    finally:
        cast.go.set()
        cast.stall.set()
        if tail is not None:
            tail.set()
        cast.done.set()
        crew.close()
    started = min(report["started"] for report in sent.values())
    ended = max(report["ended"] for report in live.values())
    delivered = sum(report["received"] for report in live.values())
    lost = sum(cast.expected[name] - live[name]["received"] for name in subscribers)
    result: dict[str, Any] = {
        "rate": delivered / (ended - started),
        "delivered": delivered,
        "lost": lost,
        "seconds": ended - started,
        "put_rate": shape.per_publisher
        * len(publishers)
        / max(r["ended"] - r["started"] for r in sent.values()),
    }
    if hub and not network.on_nats:  # the counters of the publisher that held the hub
        result["hub"] = max(hub.values(), key=lambda stats: stats.get("forwarded", 0))
    if counted is not None and after is not None:
        result["server"] = {key: after[key] - counted[key] for key in SERVER_COUNTERS}
    if stalled:
        report = late[stalled[0]]
        result["stalled_received"] = report["received"]
        result["stalled_missed"] = report["stats"]["missed"]
        # what neither arrived nor was counted as missed: silence
        result["stalled_unaccounted"] = (
            cast.stalled_count - report["received"] - report["stats"]["missed"]
        )
    if shape.sample_rss:
        result["rss_publisher_mb"] = peak["publisher"] / 2**20
        result["rss_hub_mb"] = peak["hub"] / 2**20
        result["rss_mb"] = max(peak.values()) / 2**20
    return result


def ping_pong(side: Side, rounds: int, warmup: int) -> dict[str, Any]:
    """Round trips between two processes, each publishing on its own channel."""
    crew = Crew()
    go = crew.event()
    try:
        side.start_ping_pong(crew, rounds, warmup, go)
        ready = crew.collect("ready", 2)
        if not all(report["ready"] for report in ready.values()):
            raise RunFailed("a side of the ping-pong was not ready in time")
        go.set()
        rtts = crew.collect("rtts", 1, timeout=WAIT * 5)["pinger"]
    finally:
        go.set()
        crew.close()
    if len(rtts) < rounds:
        raise RunFailed(f"only {len(rtts)} of {rounds} round trips came back")
    return {"rtts_ns": rtts}


def _cpu(watched: list[psutil.Process]) -> float:
    total = 0.0
    for process in watched:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def idle(side: Side, window: float, network: Network = ZEROMQ) -> dict[str, Any]:
    """CPU used by a started publisher (and all its processes) and a blocked subscriber;
    on NATS, with the server's when the benchmark started it (on both sides)."""
    crew = Crew()
    done = crew.event()
    try:
        up = side.start_idle(crew, done)
        ready = crew.collect("ready", 1)
        time.sleep(min(1.0, window / 2))  # let start-up work finish before the window opens
        roots = [psutil.Process(up["publisher"]["pid"]), psutil.Process(ready["subscriber"]["pid"])]
        processes = []
        for root in roots:
            processes.append(root)
            processes.extend(root.children(recursive=True))  # hub process, context manager
        server = network.server_process() if network.on_nats else None
        servers = [] if server is None else [server]
        before, server_before, opened = _cpu(processes), _cpu(servers), time.monotonic()
        time.sleep(window)  # the benchmark's own wait: the bus is what is measured
        used, server_used = _cpu(processes) - before, _cpu(servers) - server_before
        elapsed = time.monotonic() - opened
        done.set()
        crew.collect("result", 1)
    finally:
        done.set()
        crew.close()
    result = {
        "cpu_percent": 100.0 * (used + server_used) / elapsed,
        "processes": len(processes) + len(servers),
    }
    if servers:  # the server's share, the same work for both sides when idle
        result["server_cpu_percent"] = 100.0 * server_used / elapsed
    return result
