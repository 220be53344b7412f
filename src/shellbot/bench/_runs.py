"""One run of one workload on one side (ours or the anchor), in fresh processes,
on ZeroMQ (TCP loopback, free ports) or on a NATS server (``Network``)."""

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

from . import _nats, _workers

OURS, ANCHOR = "ours", "anchor"
SAMPLE_INTERVAL = 0.05  # how often RSS is read while a memory workload runs
# Seconds from a stalled subscriber's resumption to the message that shows it its gap, on
# NATS: bare nats-py takes about 0.5 s to read the 34,000 messages its socket held (T6).
TAIL_DELAY_NATS = 2.0


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


class Network:
    """Where the processes of a run meet: ZeroMQ over TCP loopback (``nats_url`` None),
    or the NATS server at ``nats_url``; ``server``, when the benchmark started that
    server itself (its memory, CPU and counters are then read too)."""

    def __init__(
        self,
        nats_url: str | None = None,
        server: _nats.NatsServer | None = None,
        curve: dict[str, str] | None = None,
    ):
        self.nats_url = nats_url
        self.server = server
        self.curve = curve  # bus.curve settings of ours, on ZeroMQ (--curve)

    @property
    def on_nats(self) -> bool:
        return self.nats_url is not None

    @property
    def url(self) -> str:
        assert self.nats_url is not None
        return self.nats_url

    def bus(self) -> dict[str, Any]:
        """The ``bus`` settings of ours for one run, shared by all its processes: a fresh
        address on ZeroMQ; on NATS, the server and a subject prefix of the run's own."""
        if self.nats_url is None:
            settings: dict[str, Any] = {
                "address": f"tcp://127.0.0.1:{free_ports(1, pairs=True)[0]}"
            }
            if self.curve is not None:
                settings["curve"] = dict(self.curve)
            return settings
        return {"address": self.nats_url, "nats": {"prefix": _nats.prefix()}}

    def server_process(self) -> psutil.Process | None:
        pid = None if self.server is None else self.server.pid
        return None if pid is None else psutil.Process(pid)

    def counters(self) -> dict[str, int] | None:
        """The server's message counters now (None on ZeroMQ or a server of the user's)."""
        varz = None if self.server is None else self.server.varz()
        if varz is None:
            return None
        return {key: int(varz.get(key, 0)) for key in SERVER_COUNTERS}


ZEROMQ = Network()
# What the server counted between the start and the end of a run's traffic: how many
# NATS messages carried the run's messages, and the slow consumers it cut off.
SERVER_COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes", "slow_consumers")


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


def flow(side: str, shape: Flow, network: Network = ZEROMQ) -> dict[str, Any]:
    """Runs a throughput workload; returns rate, losses and (when sampled) peak RSS.

    On NATS, "hub" is the server's process (when the benchmark started it), on both
    sides: the broker is what holds a stalled subscriber's backlog there."""
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

    server = network.server_process() if network.on_nats else None
    if server is not None:
        watched["hub"] = [server]
    try:
        if side == OURS:
            settings = network.bus()
            for index, (name, channels) in enumerate(
                zip(publishers, shape.publishers, strict=True)
            ):
                start = index == 0 or shape.every_publisher_starts
                crew.spawn(
                    _workers.ours_publisher,
                    name,
                    settings,
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
                    settings,
                    channels,
                    expected[name],
                    None,
                    crew.results,
                )
            for name in stalled:
                crew.spawn(
                    _workers.ours_subscriber,
                    name,
                    settings,
                    stalled_channels,
                    shape.per_publisher + 1,  # and the tail message
                    stall,
                    stalled_results,
                )
            first = up[publishers[0]]
            watched["publisher"] = [psutil.Process(first["pid"])]
            if first.get("hub_pid") and not network.on_nats:
                watched["hub"] = [psutil.Process(first["hub_pid"])]
        elif network.on_nats:
            run_prefix = _nats.prefix()

            def subjects(channels: list[str]) -> list[str]:
                return [_nats.subject(run_prefix, channel) for channel in channels]

            for index, (name, channels) in enumerate(
                zip(publishers, shape.publishers, strict=True)
            ):
                crew.spawn(
                    _nats.anchor_publisher,
                    name,
                    network.url,
                    subjects(channels),
                    shape.per_publisher,
                    go,
                    done,
                    crew.results,
                    tail if index == 0 else None,
                )
            for name, channels in zip(subscribers, shape.subscribers, strict=True):
                crew.spawn(
                    _nats.anchor_subscriber,
                    name,
                    network.url,
                    subjects(channels),
                    expected[name],
                    shape.anchor_high_water_mark,
                    None,
                    crew.results,
                )
            for name in stalled:
                crew.spawn(
                    _nats.anchor_subscriber,
                    name,
                    network.url,
                    subjects(stalled_channels),
                    shape.per_publisher + 1,  # and the tail message
                    shape.anchor_high_water_mark,
                    stall,
                    stalled_results,
                )
            up = crew.collect("up", len(publishers))
            watched["publisher"] = [psutil.Process(up[publishers[0]]["pid"])]
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
        counted = network.counters()
        go.set()
        tick = sample if shape.sample_rss else None
        sent = crew.collect("sent", len(publishers), timeout=_workers.WAIT * 5, tick=tick)
        live = crew.collect("result", len(subscribers), timeout=_workers.WAIT * 5, tick=tick)
        sample()
        after = network.counters()
        for process in frozen:
            process.resume()
        stall.set()
        if tail is not None:
            # The stalled subscriber reads again; a message published after that shows
            # it what it missed meanwhile (gaps are seen at the next message). On NATS the
            # server has cut it off meanwhile (a slow consumer): it reads what its socket
            # still holds, then reconnects and subscribes again, before the last message.
            time.sleep(TAIL_DELAY_NATS if network.on_nats else 0.5)
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
            shape.per_publisher + 1 - report["received"] - report["stats"]["missed"]
        )
    if shape.sample_rss:
        result["rss_publisher_mb"] = peak["publisher"] / 2**20
        result["rss_hub_mb"] = peak["hub"] / 2**20
        result["rss_mb"] = max(peak.values()) / 2**20
    return result


def ping_pong(side: str, rounds: int, warmup: int, network: Network = ZEROMQ) -> dict[str, Any]:
    """Round trips between two processes, each publishing on its own channel."""
    crew = Crew()
    go = crew.event()
    try:
        if side == OURS:
            settings = network.bus()
            crew.spawn(_workers.ours_pinger, "pinger", settings, rounds, warmup, go, crew.results)
            crew.spawn(_workers.ours_ponger, "ponger", settings, crew.results)
        elif network.on_nats:
            run_prefix = _nats.prefix()
            ping, pong = (_nats.subject(run_prefix, channel) for channel in ("ping", "pong"))
            url = network.url
            crew.spawn(
                _nats.anchor_pinger, "pinger", url, ping, pong, rounds, warmup, go, crew.results
            )
            crew.spawn(_nats.anchor_ponger, "ponger", url, ping, pong, crew.results)
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


def idle(side: str, window: float, network: Network = ZEROMQ) -> dict[str, Any]:
    """CPU used by a started publisher (and all its processes) and a blocked subscriber;
    on NATS, with the server's when the benchmark started it (on both sides)."""
    crew = Crew()
    done = crew.event()
    try:
        if side == OURS:
            settings = network.bus()
            crew.spawn(_workers.ours_idle_publisher, "publisher", settings, done, crew.results)
            up = crew.collect("up", 1)
            crew.spawn(_workers.ours_idle_subscriber, "subscriber", settings, crew.results)
        elif network.on_nats:
            quiet = _nats.subject(_nats.prefix(), "idle")
            url = network.url
            crew.spawn(_nats.anchor_idle_publisher, "publisher", url, quiet, done, crew.results)
            crew.spawn(_nats.anchor_idle_subscriber, "subscriber", url, quiet, crew.results)
            up = crew.collect("up", 1)
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
        server = network.server_process() if network.on_nats else None
        servers = [] if server is None else [server]

        def cpu(watched: list[psutil.Process]) -> float:
            total = 0.0
            for process in watched:
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
            return total

        before, server_before, opened = cpu(processes), cpu(servers), time.monotonic()
        time.sleep(window)  # the benchmark's own wait: the bus is what is measured
        used, server_used = cpu(processes) - before, cpu(servers) - server_before
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
