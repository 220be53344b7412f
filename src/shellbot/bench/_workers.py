"""The processes of the benchmark: ours (the bus) and the anchor (bare pyzmq; the
anchor on NATS, bare nats-py, is in ``_nats``).

Each function runs in a process of its own, started with ``spawn`` so that it
shares no object with the parent. They report on the ``results`` queue as
``(kind, name, payload)`` tuples: ``up`` once bound or started, ``ready`` once
subscriptions are live, then ``sent``, ``result`` or ``rtts``.

The anchor is what a careful user of pyzmq writes by hand for one hop: a PUB
socket (XPUB, to see the subscriptions arrive) bound by the publisher, SUB
sockets connected by subscribers, the channel as the first frame, orjson for
each message, and no send before the subscriptions are in.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import zmq

WAIT = 60.0  # the longest any step of a run waits for another process
IDLE_END = 3.0  # a receiver that got nothing for this long stops and reports what it has
STOP = -1  # the counter of the message that ends a ping-pong


def message(counter: int) -> dict[str, Any]:
    """The message of every workload."""
    return {"from": "direct-42", "input": {"key": "vote", "value": "yes"}, "counter": counter}


def _bus(settings: dict[str, Any]) -> Any:
    """The bus of one run: ``settings`` is its context's ``bus`` section (an address of
    its own on ZeroMQ; on NATS, the server and a subject prefix of its own)."""
    from shellbot import Context
    from shellbot.bus import Bus

    bus = Bus(Context({"bus": settings}))
    bus.check()
    return bus


# -- ours ---------------------------------------------------------------------------


def ours_publisher(
    name: str,
    settings: dict[str, Any],
    channels: list[str],
    count: int,
    start: bool,
    go: Any,
    done: Any,
    results: Any,
    tail: Any = None,
) -> None:
    """Puts ``count`` messages, cycling over ``channels``, once ``go`` is set; then one
    more when ``tail`` is set (a stalled subscriber sees its gap at the next message)."""
    bus = _bus(settings)
    publisher = bus.publish()
    if start:
        publisher.start()
    results.put(("up", name, {"pid": os.getpid(), "hub_pid": publisher.pid}))
    if not go.wait(WAIT):
        return
    put = publisher.put
    width = len(channels)
    started = time.perf_counter()
    if width == 1:
        channel = channels[0]
        for counter in range(count):
            put(
                channel,
                {"from": "direct-42", "input": {"key": "vote", "value": "yes"}, "counter": counter},
            )
    else:
        for counter in range(count):
            put(
                channels[counter % width],
                {"from": "direct-42", "input": {"key": "vote", "value": "yes"}, "counter": counter},
            )
    ended = time.perf_counter()
    results.put(("sent", name, {"started": started, "ended": ended}))
    if tail is not None and tail.wait(WAIT):
        put(channels[0], message(count))
    done.wait(WAIT)
    if start:
        publisher.stop(timeout=5.0)  # its last act publishes the hub's final counters
        results.put(("hub", name, publisher.stats))


def ours_subscriber(
    name: str,
    settings: dict[str, Any],
    channels: list[str],
    expected: int,
    stall: Any,
    results: Any,
) -> None:
    """Receives until ``expected`` messages came (or none came for a while)."""
    bus = _bus(settings)
    subscriber = bus.subscribe(channels)
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if stall is not None and not stall.wait(WAIT * 5):
        return
    get = subscriber.get
    received = 0
    idle = 0.0
    while received < expected:
        if get(True, IDLE_END) is None:
            idle = IDLE_END  # the wait for what never came is not part of the run
            break
        received += 1
    ended = time.perf_counter() - idle
    stats = subscriber.stats
    results.put(("result", name, {"received": received, "ended": ended, "stats": stats}))
    subscriber.close()


def ours_pinger(
    name: str, settings: dict[str, Any], rounds: int, warmup: int, go: Any, results: Any
) -> None:
    """Starts its publisher (on ZeroMQ, the hub's holder); measures ``rounds`` round
    trips ping -> pong."""
    bus = _bus(settings)
    publisher = bus.publish()
    publisher.start()
    subscriber = bus.subscribe("pong")
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if not go.wait(WAIT):
        return
    put, get, clock = publisher.put, subscriber.get, time.perf_counter_ns
    rtts = []
    for counter in range(warmup + rounds):
        started = clock()
        put("ping", message(counter))
        if get(True, 5.0) is None:
            break
        rtts.append(clock() - started)
    put("ping", message(STOP))
    results.put(("rtts", name, rtts[warmup:]))
    subscriber.close()
    publisher.stop(timeout=5.0)


def ours_ponger(name: str, settings: dict[str, Any], results: Any) -> None:
    """Answers each ping with a pong, until the stop message."""
    bus = _bus(settings)
    publisher = bus.publish()  # put() needs no started process: the pinger's reaches the hub
    subscriber = bus.subscribe("ping")
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    put, get = publisher.put, subscriber.get
    while True:
        received = get(True, WAIT)
        if received is None or received["counter"] == STOP:
            break
        put("pong", received)
    subscriber.close()


def ours_idle_subscriber(name: str, settings: dict[str, Any], results: Any) -> None:
    """Blocks in ``get(block=True)`` until the message that ends the idle window."""
    bus = _bus(settings)
    subscriber = bus.subscribe("idle")
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    subscriber.get(block=True)
    results.put(("result", name, {}))
    subscriber.close()


def ours_idle_publisher(name: str, settings: dict[str, Any], done: Any, results: Any) -> None:
    """A started publisher (on ZeroMQ, the hub's holder), idle until ``done``, then ends
    the idle subscriber's wait."""
    bus = _bus(settings)
    publisher = bus.publish()
    publisher.start()
    results.put(("up", name, {"pid": os.getpid(), "hub_pid": publisher.pid}))
    done.wait(WAIT * 5)
    publisher.put("idle", message(STOP))
    publisher.stop(timeout=5.0)


# -- the anchor: bare pyzmq ---------------------------------------------------------


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


def anchor_publisher(
    name: str,
    port: int,
    channels: list[str],
    count: int,
    subscriptions: int,
    high_water_mark: int,
    go: Any,
    done: Any,
    results: Any,
    tail: Any = None,
) -> None:
    """Binds a PUB socket, waits for ``subscriptions``, sends once ``go`` is set."""
    context = zmq.Context()
    socket = _xpub(context, port, high_water_mark)
    ready = _wait_subscriptions(socket, subscriptions)
    results.put(("up", name, {"pid": os.getpid(), "ready": ready}))
    if go.wait(WAIT):
        send, dumps = socket.send_multipart, orjson.dumps
        topics = [channel.encode() for channel in channels]
        width = len(topics)
        started = time.perf_counter()
        if width == 1:
            topic = topics[0]
            for counter in range(count):
                send(
                    (
                        topic,
                        dumps(
                            {
                                "from": "direct-42",
                                "input": {"key": "vote", "value": "yes"},
                                "counter": counter,
                            }
                        ),
                    )
                )
        else:
            for counter in range(count):
                send(
                    (
                        topics[counter % width],
                        dumps(
                            {
                                "from": "direct-42",
                                "input": {"key": "vote", "value": "yes"},
                                "counter": counter,
                            }
                        ),
                    )
                )
        ended = time.perf_counter()
        results.put(("sent", name, {"started": started, "ended": ended}))
        if tail is not None and tail.wait(WAIT):
            send((topics[0], dumps(message(count))))
        done.wait(WAIT)
    socket.close(linger=1000)
    context.term()


def anchor_subscriber(
    name: str,
    ports: list[int],
    channels: list[str],
    expected: int,
    high_water_mark: int,
    stall: Any,
    results: Any,
) -> None:
    """Connects a SUB socket to ``ports``; receives like ``ours_subscriber``."""
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


def anchor_pinger(
    name: str, port: int, peer: int, rounds: int, warmup: int, go: Any, results: Any
) -> None:
    context = zmq.Context()
    publisher = _xpub(context, port, 1000)
    subscriber = _sub(context, [peer], 1000)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"pong")
    ready = _wait_subscriptions(publisher, 1)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if go.wait(WAIT):
        send, receive = publisher.send_multipart, subscriber.recv_multipart
        dumps, loads, clock = orjson.dumps, orjson.loads, time.perf_counter_ns
        subscriber.setsockopt(zmq.RCVTIMEO, 5000)
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
    publisher.close(linger=1000)
    subscriber.close(linger=0)
    context.term()


def anchor_ponger(name: str, port: int, peer: int, results: Any) -> None:
    context = zmq.Context()
    publisher = _xpub(context, port, 1000)
    subscriber = _sub(context, [peer], 1000)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"ping")
    ready = _wait_subscriptions(publisher, 1)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    send, receive = publisher.send_multipart, subscriber.recv_multipart
    dumps, loads = orjson.dumps, orjson.loads
    subscriber.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    try:
        while True:
            received = loads(receive()[1])
            if received["counter"] == STOP:
                break
            send((b"pong", dumps(received)))
    except zmq.Again:
        pass
    publisher.close(linger=1000)
    subscriber.close(linger=0)
    context.term()


def anchor_idle_publisher(name: str, port: int, done: Any, results: Any) -> None:
    context = zmq.Context()
    socket = _xpub(context, port, 1000)
    ready = _wait_subscriptions(socket, 1)
    results.put(("up", name, {"pid": os.getpid(), "ready": ready}))
    done.wait(WAIT * 5)
    socket.send_multipart((b"idle", orjson.dumps(message(STOP))))
    socket.close(linger=1000)
    context.term()


def anchor_idle_subscriber(name: str, port: int, results: Any) -> None:
    context = zmq.Context()
    socket = _sub(context, [port], 1000)
    socket.setsockopt(zmq.SUBSCRIBE, b"idle")
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    orjson.loads(socket.recv_multipart()[1])  # blocks, as get(block=True) does
    results.put(("result", name, {}))
    socket.close(linger=0)
    context.term()
