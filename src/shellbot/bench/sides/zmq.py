"""The anchor on ZeroMQ: bare pyzmq, what a careful user writes by hand for one hop.

A PUB socket (an XPUB, to see the subscriptions arrive) bound by the publisher, SUB
sockets connected by subscribers, the channel as the first frame, orjson for each
message, and no send before the subscriptions are in.
"""

from __future__ import annotations

import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import orjson
import zmq

from ..harness import ANCHOR, IDLE_END, WAIT, Cast, Crew, Report, RunFailed
from ..network import Network, free_ports
from ..payload import STOP, message


class ZmqAnchor:
    """Bare pyzmq's side of a run (``harness.Side``)."""

    name = ANCHOR
    reports_hub = False

    def __init__(self, network: Network) -> None:
        self.network = network

    def start_flow(self, crew: Crew, cast: Cast) -> dict[str, Report]:
        shape = cast.shape
        ports = free_ports(len(cast.publishers))
        # XPUB_VERBOSE: every subscriber sends each of its subscriptions to each
        # publisher it connects to (stalled ones connect to the first only).
        live_subscriptions = sum(len(channels) for channels in shape.subscribers)
        for index, (name, channels, port) in enumerate(
            zip(cast.publishers, shape.publishers, ports, strict=True)
        ):
            subscriptions = live_subscriptions
            if index == 0:
                subscriptions += len(cast.stalled) * len(cast.stalled_channels)
            crew.spawn(
                publisher,
                name,
                port,
                channels,
                shape.per_publisher,
                subscriptions,
                shape.anchor_high_water_mark,
                cast.go,
                cast.done,
                crew.results,
                cast.tail if index == 0 else None,
            )
        for name, channels in zip(cast.subscribers, shape.subscribers, strict=True):
            crew.spawn(
                subscriber,
                name,
                ports,
                channels,
                cast.expected[name],
                shape.anchor_high_water_mark,
                None,
                crew.results,
            )
        for name in cast.stalled:
            crew.spawn(
                subscriber,
                name,
                ports[:1],
                cast.stalled_channels,
                cast.stalled_count,
                shape.anchor_high_water_mark,
                cast.stall,
                cast.stalled_results,
            )
        up = crew.collect("up", len(cast.publishers))
        if not all(report.get("ready") for report in up.values()):
            raise RunFailed("an anchor publisher saw no subscription")
        return up

    def start_ping_pong(self, crew: Crew, rounds: int, warmup: int, go: Event) -> None:
        port, peer = free_ports(2)
        crew.spawn(pinger, "pinger", port, peer, rounds, warmup, go, crew.results)
        crew.spawn(ponger, "ponger", peer, port, crew.results)

    def start_idle(self, crew: Crew, done: Event) -> dict[str, Report]:
        port = free_ports(1)[0]
        crew.spawn(idle_publisher, "publisher", port, done, crew.results)
        crew.spawn(idle_subscriber, "subscriber", port, crew.results)
        return crew.collect("up", 1)


# -- sockets ----------------------------------------------------------------------------


def _xpub(context: zmq.Context, port: int, high_water_mark: int) -> zmq.Socket:
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message per subscriber
    socket.setsockopt(zmq.SNDHWM, high_water_mark)
    socket.setsockopt(zmq.RCVHWM, 0)  # subscriptions beyond a high-water mark would be lost
    socket.bind(f"tcp://127.0.0.1:{port}")
    return socket


def _wait_subscriptions(socket: zmq.Socket, count: int) -> bool:
    deadline = time.monotonic() + WAIT
    seen = 0
    while seen < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not socket.poll(int(remaining * 1000)):
            return False
        if socket.recv()[:1] == b"\x01":
            seen += 1
    return True


def _sub(context: zmq.Context, ports: list[int], high_water_mark: int) -> zmq.Socket:
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, high_water_mark)
    socket.setsockopt(zmq.SNDHWM, 0)  # subscriptions travel this way; none may be dropped
    for port in ports:
        socket.connect(f"tcp://127.0.0.1:{port}")
    return socket


# -- the processes ----------------------------------------------------------------------


def publisher(
    name: str,
    port: int,
    channels: list[str],
    count: int,
    subscriptions: int,
    high_water_mark: int,
    go: Event,
    done: Event,
    results: Queue[Any],
    tail: Event | None = None,
) -> None:
    """Binds a PUB socket, waits for ``subscriptions``, sends once ``go`` is set."""
    context = zmq.Context()
    socket = _xpub(context, port, high_water_mark)
    ready = _wait_subscriptions(socket, subscriptions)
    results.put(("up", name, {"pid": os.getpid(), "ready": ready}))
    if go.wait(WAIT):
        send, dumps, body = socket.send_multipart, orjson.dumps, message
        topics = [channel.encode() for channel in channels]
        width = len(topics)
        started = time.perf_counter()
        if width == 1:
            topic = topics[0]
            for counter in range(count):
                send((topic, dumps(body(counter))))
        else:
            for counter in range(count):
                send((topics[counter % width], dumps(body(counter))))
        ended = time.perf_counter()
        results.put(("sent", name, {"started": started, "ended": ended}))
        if tail is not None and tail.wait(WAIT):
            send((topics[0], dumps(message(count))))
        done.wait(WAIT)
    socket.close(linger=1000)
    context.term()


def subscriber(
    name: str,
    ports: list[int],
    channels: list[str],
    expected: int,
    high_water_mark: int,
    stall: Event | None,
    results: Queue[Any],
) -> None:
    """Connects a SUB socket to ``ports``; receives as ours does (``sides.ours``)."""
    context = zmq.Context()
    socket = _sub(context, ports, high_water_mark)
    for channel in channels:
        socket.setsockopt(zmq.SUBSCRIBE, channel.encode())
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    if stall is not None and not stall.wait(WAIT * 5):
        return
    socket.setsockopt(zmq.RCVTIMEO, int(IDLE_END * 1000))
    receive, loads = socket.recv_multipart, orjson.loads
    received = 0
    missed = 0
    last = -1
    idle = 0.0
    try:
        while received < expected:
            _, body = receive()
            counter = loads(body)["counter"]
            if counter != last + 1:
                missed += counter - last - 1
            last = counter
            received += 1
    except zmq.Again:
        idle = IDLE_END  # the wait for what never came is not part of the run
    ended = time.perf_counter() - idle
    stats = {"received": received, "dropped": 0, "missed": missed}
    results.put(("result", name, {"received": received, "ended": ended, "stats": stats}))
    socket.close(linger=0)
    context.term()


def pinger(
    name: str, port: int, peer: int, rounds: int, warmup: int, go: Event, results: Queue[Any]
) -> None:
    context = zmq.Context()
    publishing = _xpub(context, port, 1000)
    subscription = _sub(context, [peer], 1000)
    subscription.setsockopt(zmq.SUBSCRIBE, b"pong")
    ready = _wait_subscriptions(publishing, 1)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if go.wait(WAIT):
        send, receive = publishing.send_multipart, subscription.recv_multipart
        dumps, loads, clock = orjson.dumps, orjson.loads, time.perf_counter_ns
        subscription.setsockopt(zmq.RCVTIMEO, 5000)
        rtts = []
        try:
            for counter in range(warmup + rounds):
                started = clock()
                send((b"ping", dumps(message(counter))))
                loads(receive()[1])
                rtts.append(clock() - started)
        except zmq.Again:
            pass
        send((b"ping", dumps(message(STOP))))
        results.put(("rtts", name, rtts[warmup:]))
    publishing.close(linger=1000)
    subscription.close(linger=0)
    context.term()


def ponger(name: str, port: int, peer: int, results: Queue[Any]) -> None:
    context = zmq.Context()
    publishing = _xpub(context, port, 1000)
    subscription = _sub(context, [peer], 1000)
    subscription.setsockopt(zmq.SUBSCRIBE, b"ping")
    ready = _wait_subscriptions(publishing, 1)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    send, receive = publishing.send_multipart, subscription.recv_multipart
    dumps, loads = orjson.dumps, orjson.loads
    subscription.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    try:
        while True:
            received = loads(receive()[1])
            if received["counter"] == STOP:
                break
            send((b"pong", dumps(received)))
    except zmq.Again:
        pass
    publishing.close(linger=1000)
    subscription.close(linger=0)
    context.term()


def idle_publisher(name: str, port: int, done: Event, results: Queue[Any]) -> None:
    context = zmq.Context()
    socket = _xpub(context, port, 1000)
    ready = _wait_subscriptions(socket, 1)
    results.put(("up", name, {"pid": os.getpid(), "ready": ready}))
    done.wait(WAIT * 5)
    socket.send_multipart((b"idle", orjson.dumps(message(STOP))))
    socket.close(linger=1000)
    context.term()


def idle_subscriber(name: str, port: int, results: Queue[Any]) -> None:
    context = zmq.Context()
    socket = _sub(context, [port], 1000)
    socket.setsockopt(zmq.SUBSCRIBE, b"idle")
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    orjson.loads(socket.recv_multipart()[1])  # blocks, as get(block=True) does
    results.put(("result", name, {}))
    socket.close(linger=0)
    context.term()
