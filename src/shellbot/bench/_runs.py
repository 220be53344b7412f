"""One run of one workload on one side (ours or the anchor), in fresh processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from . import _workers

OURS, ANCHOR = "ours", "anchor"
SAMPLE_INTERVAL = 0.05  # how often RSS is read while a memory workload runs


class RunFailed(RuntimeError):
    """A process of the run did not do its part in time."""


def free_ports(count: int, pairs: bool = False) -> list[int]:
    """``count`` ports free now; with ``pairs``, each p with p + 1 free too (a hub's inbound)."""
    ports: list[int] = []
    holders = []
    try:
        while len(ports) < count:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            holders.append(first)
            if pairs:
                if port >= 65534:
                    continue
                second = socket.socket()
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    second.close()
                    continue
                holders.append(second)
            ports.append(port)
    finally:
        for holder in holders:
            holder.close()
    return ports


class Crew:
    """The processes of one run, the queue they report on, and their clean-up."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.results = self._context.Queue()
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._kept: list[tuple[str, str, Any]] = []

    def event(self) -> Any:
        return self._context.Event()

    def queue(self) -> Any:
        """A report queue of its own, for processes that get frozen (SIGSTOP): frozen
        while its feeder thread holds the queue's lock, a process would block every
        other writer of a shared queue."""
        return self._context.Queue()

    def spawn(self, target: Callable[..., None], *args: Any) -> None:
        # Not daemonic: a worker starts processes of its own (a publisher, a context manager).
        process = self._context.Process(target=target, args=args)
        process.start()
        self._processes.append(process)

    def collect(
        self,
        kind: str,
        count: int,
        timeout: float = _workers.WAIT,
        tick: Callable[[], None] | None = None,
        source: Any = None,
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


def flow(side: str, shape: Flow) -> dict[str, Any]:
    """Runs a throughput workload; returns rate, losses and (when sampled) peak RSS."""
    crew = Crew()
    go, done, stall = crew.event(), crew.event(), crew.event()
    tail = crew.event() if shape.stalled else None
    stalled_results = crew.queue() if shape.stalled else None
    publishers = [f"publisher-{index}" for index in range(len(shape.publishers))]
    subscribers = [f"subscriber-{index}" for index in range(len(shape.subscribers))]
    stalled = [f"stalled-{index}" for index in range(shape.stalled)]
    expected = {
        name: shape.per_publisher
        * sum(1 for channels in shape.publishers if set(channels) & set(subscribed))
        for name, subscribed in zip(subscribers, shape.subscribers, strict=True)
    }
    stalled_channels = shape.publishers[0]
    peak = {"publisher": 0, "hub": 0}
    watched: dict[str, list[psutil.Process]] = {"publisher": [], "hub": []}

    def sample() -> None:
        for role, processes in watched.items():
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    peak[role] = max(peak[role], process.memory_info().rss)

    try:
        if side == OURS:
            address = f"tcp://127.0.0.1:{free_ports(1, pairs=True)[0]}"
            for index, (name, channels) in enumerate(
                zip(publishers, shape.publishers, strict=True)
            ):
                start = index == 0 or shape.every_publisher_starts
                crew.spawn(
                    _workers.ours_publisher,
                    name,
                    address,
                    channels,
                    shape.per_publisher,
                    start,
                    go,
                    done,
                    crew.results,
                    tail if index == 0 else None,
                )
                if index == 0:
                    up = crew.collect("up", 1)
            up.update(crew.collect("up", len(publishers) - 1) if len(publishers) > 1 else {})
            for name, channels in zip(subscribers, shape.subscribers, strict=True):
                crew.spawn(
                    _workers.ours_subscriber,
                    name,
                    address,
                    channels,
                    expected[name],
                    None,
                    crew.results,
                )
            for name in stalled:
                crew.spawn(
                    _workers.ours_subscriber,
                    name,
                    address,
                    stalled_channels,
                    shape.per_publisher + 1,  # and the tail message
                    stall,
                    stalled_results,
                )
            first = up[publishers[0]]
            watched["publisher"] = [psutil.Process(first["pid"])]
            if first.get("hub_pid"):
                watched["hub"] = [psutil.Process(first["hub_pid"])]
        else:
            ports = free_ports(len(publishers))
            # XPUB_VERBOSE: every subscriber sends each of its subscriptions to each
            # publisher it connects to (stalled ones connect to the first only).
            live_subscriptions = sum(len(channels) for channels in shape.subscribers)
            for index, (name, channels, port) in enumerate(
                zip(publishers, shape.publishers, ports, strict=True)
            ):
                subscriptions = live_subscriptions
                if index == 0:
                    subscriptions += len(stalled) * len(stalled_channels)
                crew.spawn(
                    _workers.anchor_publisher,
                    name,
                    port,
                    channels,
                    shape.per_publisher,
                    subscriptions,
                    shape.anchor_high_water_mark,
                    go,
                    done,
                    crew.results,
                    tail if index == 0 else None,
                )
            for name, channels in zip(subscribers, shape.subscribers, strict=True):
                crew.spawn(
                    _workers.anchor_subscriber,
                    name,
                    ports,
                    channels,
                    expected[name],
                    shape.anchor_high_water_mark,
                    None,
                    crew.results,
                )
            for name in stalled:
                crew.spawn(
                    _workers.anchor_subscriber,
                    name,
                    ports[:1],
                    stalled_channels,
                    shape.per_publisher + 1,  # and the tail message
                    shape.anchor_high_water_mark,
                    stall,
                    stalled_results,
                )
            up = crew.collect("up", len(publishers))
            if not all(report.get("ready") for report in up.values()):
                raise RunFailed("an anchor publisher saw no subscription")
            watched["publisher"] = [psutil.Process(up[publishers[0]]["pid"])]
        ready = crew.collect("ready", len(subscribers))
        if stalled:
            ready.update(crew.collect("ready", len(stalled), source=stalled_results))
        if not all(report["ready"] for report in ready.values()):
            raise RunFailed("a subscriber was not ready in time")
        frozen = []
        if shape.freeze_stalled:
            frozen = [psutil.Process(ready[name]["pid"]) for name in stalled]
            for process in frozen:
                process.suspend()
        sample()
        go.set()
        tick = sample if shape.sample_rss else None
        sent = crew.collect("sent", len(publishers), timeout=_workers.WAIT * 5, tick=tick)
        live = crew.collect("result", len(subscribers), timeout=_workers.WAIT * 5, tick=tick)
        sample()
        for process in frozen:
            process.resume()
        stall.set()
        if tail is not None:
            # The stalled subscriber reads again; a message published after that shows
            # it what it missed meanwhile (gaps are seen at the next message).
            time.sleep(0.5)
            tail.set()
        late = crew.collect("result", len(stalled), source=stalled_results) if stalled else {}
        done.set()
        holders = len(publishers) if shape.every_publisher_starts else 1
        hub = crew.collect("hub", holders, timeout=15.0) if side == OURS else {}
    finally:
        go.set()
        stall.set()
        if tail is not None:
            tail.set()
        done.set()
        crew.close()
    started = min(report["started"] for report in sent.values())
    ended = max(report["ended"] for report in live.values())
    delivered = sum(report["received"] for report in live.values())
    lost = sum(expected[name] - live[name]["received"] for name in subscribers)
    result: dict[str, Any] = {
        "rate": delivered / (ended - started),
        "delivered": delivered,
        "lost": lost,
        "seconds": ended - started,
        "put_rate": shape.per_publisher
        * len(publishers)
        / max(r["ended"] - r["started"] for r in sent.values()),
    }
    if hub:  # the counters of the publisher that held the hub
        result["hub"] = max(hub.values(), key=lambda stats: stats.get("forwarded", 0))
    if stalled:
        report = late[stalled[0]]
        result["stalled_received"] = report["received"]
        result["stalled_missed"] = report["stats"]["missed"]
        # what neither arrived nor was counted as missed: silence
        result["stalled_unaccounted"] = (
            shape.per_publisher + 1 - report["received"] - report["stats"]["missed"]
        )
    if shape.sample_rss:
        result["rss_publisher_mb"] = peak["publisher"] / 2**20
        result["rss_hub_mb"] = peak["hub"] / 2**20
        result["rss_mb"] = max(peak.values()) / 2**20
    return result


def ping_pong(side: str, rounds: int, warmup: int) -> dict[str, Any]:
    """Round trips between two processes, each publishing on its own channel."""
    crew = Crew()
    go = crew.event()
    try:
        if side == OURS:
            address = f"tcp://127.0.0.1:{free_ports(1, pairs=True)[0]}"
            crew.spawn(_workers.ours_pinger, "pinger", address, rounds, warmup, go, crew.results)
            crew.spawn(_workers.ours_ponger, "ponger", address, crew.results)
        else:
            port, peer = free_ports(2)
            crew.spawn(
                _workers.anchor_pinger, "pinger", port, peer, rounds, warmup, go, crew.results
            )
            crew.spawn(_workers.anchor_ponger, "ponger", peer, port, crew.results)
        ready = crew.collect("ready", 2)
        if not all(report["ready"] for report in ready.values()):
            raise RunFailed("a side of the ping-pong was not ready in time")
        go.set()
        rtts = crew.collect("rtts", 1, timeout=_workers.WAIT * 5)["pinger"]
    finally:
        go.set()
        crew.close()
    if len(rtts) < rounds:
        raise RunFailed(f"only {len(rtts)} of {rounds} round trips came back")
    return {"rtts_ns": rtts}


def idle(side: str, window: float) -> dict[str, Any]:
    """CPU used by a started publisher (and all its processes) and a blocked subscriber."""
    crew = Crew()
    done = crew.event()
    try:
        if side == OURS:
            address = f"tcp://127.0.0.1:{free_ports(1, pairs=True)[0]}"
            crew.spawn(_workers.ours_idle_publisher, "publisher", address, done, crew.results)
            up = crew.collect("up", 1)
            crew.spawn(_workers.ours_idle_subscriber, "subscriber", address, crew.results)
        else:
            port = free_ports(1)[0]
            crew.spawn(_workers.anchor_idle_publisher, "publisher", port, done, crew.results)
            crew.spawn(_workers.anchor_idle_subscriber, "subscriber", port, crew.results)
            up = crew.collect("up", 1)
        ready = crew.collect("ready", 1)
        time.sleep(min(1.0, window / 2))  # let start-up work finish before the window opens
        roots = [psutil.Process(up["publisher"]["pid"]), psutil.Process(ready["subscriber"]["pid"])]
        processes = []
        for root in roots:
            processes.append(root)
            processes.extend(root.children(recursive=True))  # hub process, context manager

        def cpu() -> float:
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
            return total

        before, opened = cpu(), time.monotonic()
        time.sleep(window)  # the benchmark's own wait: the bus is what is measured
        used, elapsed = cpu() - before, time.monotonic() - opened
        done.set()
        crew.collect("result", 1)
    finally:
        done.set()
        crew.close()
    return {"cpu_percent": 100.0 * used / elapsed, "processes": len(processes)}
