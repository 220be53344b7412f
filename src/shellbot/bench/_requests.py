"""T8, request/reply: one requester and one responder, sequential requests, then
``FANS`` requesters at once against the same responder.

Ours: ``bus.request()`` answered by ``message.reply()`` (on ZeroMQ through the hub,
which the responder's started publisher holds: two hops each way). The anchor on
ZeroMQ is a bare pyzmq REQ socket connected straight to a REP socket (no hub); on
NATS, nats-py's ``nc.request()`` answered by a callback responder on the same server.
Every side decodes and encodes each message with orjson.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import orjson
import zmq

from . import _nats
from ._runs import OURS, Crew, Network, RunFailed, free_ports
from ._workers import WAIT, _bus, message

CHANNEL = "bench.ask"
FANS = 8  # requesters at once in the second part
LATENCY_TARGET = 2.2  # p50 at most this times the anchor's on ZeroMQ (the hub's two hops)
NATS_LATENCY_TARGET = 1.2  # on NATS, where both sides go through the server
CONCURRENT_TARGET = 1.0  # FANS requesters: requests/s at least this times the anchor's


def request_reply(side: str, rounds: int, warmup: int, network: Network) -> dict[str, Any]:
    """Round trips of one requester, then the requests/s of ``FANS`` at once."""
    crew = Crew()
    go, go_all, done = crew.event(), crew.event(), crew.event()
    each = max(1, rounds // FANS)
    try:
        if side == OURS:
            settings = network.bus()
            responder: tuple[Callable[..., None], Any] = (ours_responder, settings)
            requester: tuple[Callable[..., None], Any] = (ours_requester, settings)
        elif network.on_nats:
            subject = f"{_nats.prefix()}.r.{CHANNEL}"
            responder = (nats_responder, (network.url, subject))
            requester = (nats_requester, (network.url, subject))
        else:
            port = free_ports(1)[0]
            responder, requester = (zmq_responder, port), (zmq_requester, port)
        crew.spawn(responder[0], "responder", responder[1], done, crew.results)
        if not crew.collect("ready", 1)["responder"]["ready"]:
            raise RunFailed("the responder was not ready in time")
        crew.spawn(requester[0], "requester", requester[1], rounds, warmup, go, crew.results)
        if not crew.collect("ready", 1)["requester"]["ready"]:
            raise RunFailed("the requester got no answer in time")
        go.set()
        alone = crew.collect("rtts", 1, timeout=WAIT * 5)["requester"]
        names = [f"requester-{index}" for index in range(FANS)]
        for name in names:
            crew.spawn(requester[0], name, requester[1], each, 10, go_all, crew.results)
        if not all(report["ready"] for report in crew.collect("ready", FANS).values()):
            raise RunFailed("a requester got no answer in time")
        go_all.set()
        together = crew.collect("rtts", FANS, timeout=WAIT * 5)
    finally:
        go.set()
        go_all.set()
        done.set()
        crew.close()
    answered = sum(len(report["rtts"]) for report in together.values())
    if len(alone["rtts"]) < rounds or answered < each * FANS:
        raise RunFailed(f"only {len(alone['rtts'])} of {rounds} requests were answered")
    slowest = max(report["elapsed_ns"] for report in together.values())
    return {
        "rtts_ns": alone["rtts"],
        "rate": len(alone["rtts"]) / (alone["elapsed_ns"] / 1e9),
        "concurrent_rate": answered / (slowest / 1e9),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pooled round trips of every round, and the best rates."""
    pooled = sorted(rtt for result in runs for rtt in result["rtts_ns"])
    count = len(pooled)
    return {
        "round_trips": count,
        "p50_us": pooled[count // 2] / 1000,
        "p99_us": pooled[int(count * 0.99)] / 1000,
        "rate": max(result["rate"] for result in runs),
        "concurrent_rate": max(result["concurrent_rate"] for result in runs),
    }


def rows(
    ours: dict[str, Any], anchor: dict[str, Any], nats: bool, row: Callable[..., dict[str, Any]]
) -> list[dict[str, Any]]:
    """T8's lines of the table (``row`` is the table's own maker)."""
    target = NATS_LATENCY_TARGET if nats else LATENCY_TARGET
    ratio = ours["p50_us"] / anchor["p50_us"]
    concurrent = ours["concurrent_rate"] / anchor["concurrent_rate"]
    return [
        row(
            "T8",
            "round trip p50",
            ours["p50_us"],
            anchor["p50_us"],
            f"<= {target}x anchor",
            ratio <= target,
            "µs",
            judged="ratio",
        ),
        row("T8", "round trip p99", ours["p99_us"], anchor["p99_us"], "(information)", None, "µs"),
        row(
            "T8",
            "requests/s, 1 requester",
            ours["rate"],
            anchor["rate"],
            "(information)",
            None,
            "requests/s",
        ),
        row(
            "T8",
            f"requests/s, {FANS} requesters",
            ours["concurrent_rate"],
            anchor["concurrent_rate"],
            f">= {CONCURRENT_TARGET}x anchor",
            concurrent >= CONCURRENT_TARGET,
            "requests/s",
            judged="ratio",
        ),
    ]


def _report(results: Any, name: str, rtts: list[int], warmup: int, elapsed: int) -> None:
    results.put(("rtts", name, {"rtts": rtts[warmup:], "elapsed_ns": elapsed}))


# -- ours -------------------------------------------------------------------------------


def ours_responder(name: str, settings: dict[str, Any], done: Any, results: Any) -> None:
    """Answers every request with what it asked; its publisher keeps the bus up."""
    bus = _bus(settings)
    keeper = bus.publish()
    keeper.start()
    subscriber = bus.subscribe(CHANNEL)
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    receive = subscriber.receive
    while not done.is_set():
        request = receive(True, 0.25)
        if request is not None:
            request.reply(request.message)
    subscriber.close()
    keeper.stop(timeout=5.0)


def ours_requester(
    name: str, settings: dict[str, Any], rounds: int, warmup: int, go: Any, results: Any
) -> None:
    bus = _bus(settings)
    try:
        bus.request(CHANNEL, message(-1), timeout=WAIT)  # the inbox made live
        ready = True
    except Exception:
        ready = False
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if not ready or not go.wait(WAIT):
        return
    request, clock = bus.request, time.perf_counter_ns
    rtts = []
    begun = clock()
    with contextlib.suppress(Exception):
        for counter in range(warmup + rounds):
            if counter == warmup:
                begun = clock()
            started = clock()
            request(CHANNEL, message(counter), timeout=5.0)
            rtts.append(clock() - started)
    _report(results, name, rtts, warmup, clock() - begun)


# -- the anchor on ZeroMQ: REQ connected straight to REP --------------------------------


def zmq_responder(name: str, port: int, done: Any, results: Any) -> None:
    context = zmq.Context()
    socket = context.socket(zmq.REP)
    socket.bind(f"tcp://127.0.0.1:{port}")
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    loads, dumps = orjson.loads, orjson.dumps
    while not done.is_set():
        if socket.poll(250):
            socket.send(dumps(loads(socket.recv())))
    socket.close(linger=0)
    context.term()


def zmq_requester(name: str, port: int, rounds: int, warmup: int, go: Any, results: Any) -> None:
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.connect(f"tcp://127.0.0.1:{port}")
    loads, dumps, clock = orjson.loads, orjson.dumps, time.perf_counter_ns
    socket.send(dumps(message(-1)))
    ready = bool(socket.poll(int(WAIT * 1000)))
    if ready:
        loads(socket.recv())
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    rtts = []
    begun = clock()
    if ready and go.wait(WAIT):
        for counter in range(warmup + rounds):
            if counter == warmup:
                begun = clock()
            started = clock()
            socket.send(dumps(message(counter)))
            if not socket.poll(5000):
                break
            loads(socket.recv())
            rtts.append(clock() - started)
        _report(results, name, rtts, warmup, clock() - begun)
    socket.close(linger=0)
    context.term()


# -- the anchor on NATS: nc.request() and a callback responder --------------------------


def nats_responder(name: str, where: tuple[str, str], done: Any, results: Any) -> None:
    asyncio.run(_nats_responder(name, *where, done, results))


async def _nats_responder(name: str, url: str, subject: str, done: Any, results: Any) -> None:
    client = await _nats._connect(url)
    loads, dumps = orjson.loads, orjson.dumps

    async def on_request(msg: Any) -> None:
        await msg.respond(dumps(loads(msg.data)))

    await client.subscribe(subject, cb=on_request)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    await _nats._wait(done, WAIT * 10)
    await client.close()


def nats_requester(
    name: str, where: tuple[str, str], rounds: int, warmup: int, go: Any, results: Any
) -> None:
    asyncio.run(_nats_requester(name, *where, rounds, warmup, go, results))


async def _nats_requester(
    name: str, url: str, subject: str, rounds: int, warmup: int, go: Any, results: Any
) -> None:
    client = await _nats._connect(url)
    loads, dumps, clock = orjson.loads, orjson.dumps, time.perf_counter_ns
    try:
        loads((await client.request(subject, dumps(message(-1)), timeout=WAIT)).data)
        ready = True
    except Exception:
        ready = False
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    if ready and await _nats._wait(go, WAIT):
        rtts = []
        begun = clock()
        with contextlib.suppress(Exception):
            for counter in range(warmup + rounds):
                if counter == warmup:
                    begun = clock()
                started = clock()
                loads((await client.request(subject, dumps(message(counter)), timeout=5.0)).data)
                rtts.append(clock() - started)
        _report(results, name, rtts, warmup, clock() - begun)
    await client.close()
