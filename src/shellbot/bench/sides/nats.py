"""The anchor on NATS: bare nats-py, what a careful user writes for each job.

One connection per process (``nats.connect``, default options), ``publish()`` of
orjson-encoded messages in a loop and a ``flush()`` after it, subscribers with a
callback that decodes with orjson, and every ``subscribe()`` followed by a
``flush()``: on one server, a subscription the server answered for is routed from
then on, so no publisher starts before the subscriptions are in. Ours runs the same
jobs through the bus, on the same server, in the same run.

Its processes are coroutines: the crew runs each in an event loop of its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import orjson

from ..harness import ANCHOR, IDLE_END, WAIT, Cast, Crew, Report
from ..network import Network, prefix, subject
from ..payload import STOP, message

CHECK_SLICE = 0.1  # a subscriber checks this often whether messages still come


class NatsAnchor:
    """Bare nats-py's side of a run (``harness.Side``), on the run's server."""

    name = ANCHOR
    reports_hub = False

    def __init__(self, network: Network) -> None:
        self.network = network

    def start_flow(self, crew: Crew, cast: Cast) -> dict[str, Report]:
        shape, url, run_prefix = cast.shape, self.network.url, prefix()

        def subjects(channels: list[str]) -> list[str]:
            return [subject(run_prefix, channel) for channel in channels]

        for index, (name, channels) in enumerate(
            zip(cast.publishers, shape.publishers, strict=True)
        ):
            crew.spawn(
                publisher,
                name,
                url,
                subjects(channels),
                shape.per_publisher,
                cast.go,
                cast.done,
                crew.results,
                cast.tail if index == 0 else None,
            )
        for name, channels in zip(cast.subscribers, shape.subscribers, strict=True):
            crew.spawn(
                subscriber,
                name,
                url,
                subjects(channels),
                cast.expected[name],
                shape.anchor_high_water_mark,
                None,
                crew.results,
            )
        for name in cast.stalled:
            crew.spawn(
                subscriber,
                name,
                url,
                subjects(cast.stalled_channels),
                cast.stalled_count,
                shape.anchor_high_water_mark,
                cast.stall,
                cast.stalled_results,
            )
        return crew.collect("up", len(cast.publishers))

    def start_ping_pong(self, crew: Crew, rounds: int, warmup: int, go: Event) -> None:
        run_prefix, url = prefix(), self.network.url
        ping, pong = (subject(run_prefix, channel) for channel in ("ping", "pong"))
        crew.spawn(pinger, "pinger", url, ping, pong, rounds, warmup, go, crew.results)
        crew.spawn(ponger, "ponger", url, ping, pong, crew.results)

    def start_idle(self, crew: Crew, done: Event) -> dict[str, Report]:
        quiet, url = subject(prefix(), "idle"), self.network.url
        crew.spawn(idle_publisher, "publisher", url, quiet, done, crew.results)
        crew.spawn(idle_subscriber, "subscriber", url, quiet, crew.results)
        return crew.collect("up", 1)


# -- what every process of the anchor does ------------------------------------------------


async def connect(url: str) -> Any:
    """The anchor's connection: nats-py's defaults, errors kept quiet."""
    import nats

    async def on_error(error: Exception) -> None:
        pass  # a stalled subscriber cut off by the server (T6) shows as a gap, as ours does

    return await nats.connect(url, name="shellbot-bench-anchor", error_cb=on_error)


async def wait(event: Event, timeout: float) -> bool:
    """Waits for a ``multiprocessing`` event without stopping the client's loop."""
    return bool(await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout))


async def until_done(finished: asyncio.Event, progress: Callable[[], int]) -> float | None:
    """Waits for ``finished``, or until ``progress()`` stood still for ``IDLE_END`` seconds;
    returns None when finished, else when the last progress was seen (``perf_counter``)."""
    seen, moved = progress(), time.perf_counter()
    while not finished.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(finished.wait(), CHECK_SLICE)
        now = time.perf_counter()
        if progress() != seen:
            seen, moved = progress(), now
        elif now - moved >= IDLE_END and not finished.is_set():
            return moved
    return None


# -- the processes ----------------------------------------------------------------------


async def publisher(
    name: str,
    url: str,
    subjects: list[str],
    count: int,
    go: Event,
    done: Event,
    results: Queue[Any],
    tail: Event | None = None,
) -> None:
    """Publishes ``count`` messages, cycling over ``subjects``, once ``go`` is set."""
    client = await connect(url)
    results.put(("up", name, {"pid": os.getpid(), "ready": True}))
    if await wait(go, WAIT):
        publish, dumps, body = client.publish, orjson.dumps, message
        width = len(subjects)
        started = time.perf_counter()
        if width == 1:
            only = subjects[0]
            for counter in range(count):
                await publish(only, dumps(body(counter)))
        else:
            for counter in range(count):
                await publish(subjects[counter % width], dumps(body(counter)))
        ended = time.perf_counter()
        await client.flush(int(WAIT))
        results.put(("sent", name, {"started": started, "ended": ended}))
        if tail is not None and await wait(tail, WAIT):
            await publish(subjects[0], dumps(message(count)))
            await client.flush(int(WAIT))
        await wait(done, WAIT)
    await client.close()


async def subscriber(
    name: str,
    url: str,
    subjects: list[str],
    expected: int,
    pending_limit: int,
    stall: Event | None,
    results: Queue[Any],
) -> None:
    """Subscribes a callback to ``subjects``; counts until ``expected`` came (or none
    came for ``IDLE_END`` seconds). ``pending_limit``: the messages a subscription
    holds for its callback (0: every message, as ours keeps them)."""
    client = await connect(url)
    loads = orjson.loads
    state = {"received": 0, "missed": 0, "last": -1}
    finished = asyncio.Event()
    ended = 0.0

    async def on_message(msg: Any) -> None:
        nonlocal ended
        counter = loads(msg.data)["counter"]
        if counter != state["last"] + 1:
            state["missed"] += counter - state["last"] - 1
        state["last"] = counter
        state["received"] += 1
        if state["received"] == expected:
            ended = time.perf_counter()
            finished.set()

    for name_ in subjects:
        await client.subscribe(
            name_,
            cb=on_message,
            pending_msgs_limit=pending_limit,
            pending_bytes_limit=0 if pending_limit == 0 else 128 * 2**20,
        )
    await client.flush(int(WAIT))  # the server holds every subscription from here on
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    if stall is not None:
        # Stalled: this program stops reading, its loop held as a busy program's would.
        stall.wait(WAIT * 5)
    last_seen = await until_done(finished, lambda: state["received"])
    if last_seen is not None:  # some never came: the run ended with the last that did
        ended = last_seen
    received = state["received"]
    stats = {"received": received, "dropped": 0, "missed": state["missed"]}
    results.put(("result", name, {"received": received, "ended": ended, "stats": stats}))
    await client.close()


async def pinger(
    name: str,
    url: str,
    ping: str,
    pong: str,
    rounds: int,
    warmup: int,
    go: Event,
    results: Queue[Any],
) -> None:
    client = await connect(url)
    loop = asyncio.get_running_loop()
    loads, dumps, clock = orjson.loads, orjson.dumps, time.perf_counter_ns
    answer: asyncio.Future[Any] = loop.create_future()

    async def on_pong(msg: Any) -> None:
        if not answer.done():
            answer.set_result(loads(msg.data))

    await client.subscribe(pong, cb=on_pong)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    rtts: list[int] = []
    if await wait(go, WAIT):
        publish = client.publish
        with contextlib.suppress(asyncio.TimeoutError):
            for counter in range(warmup + rounds):
                started = clock()
                answer = loop.create_future()
                await publish(ping, dumps(message(counter)))
                await asyncio.wait_for(answer, 5.0)
                rtts.append(clock() - started)
        await publish(ping, dumps(message(STOP)))
        await client.flush(int(WAIT))
        results.put(("rtts", name, rtts[warmup:]))
    await client.close()


async def ponger(name: str, url: str, ping: str, pong: str, results: Queue[Any]) -> None:
    client = await connect(url)
    loads, dumps = orjson.loads, orjson.dumps
    stopped = asyncio.Event()

    async def on_ping(msg: Any) -> None:
        received = loads(msg.data)
        if received["counter"] == STOP:
            stopped.set()
        else:
            await client.publish(pong, dumps(received))

    await client.subscribe(ping, cb=on_ping)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopped.wait(), WAIT * 5)
    await client.close()


async def idle_publisher(name: str, url: str, idle: str, done: Event, results: Queue[Any]) -> None:
    client = await connect(url)
    results.put(("up", name, {"pid": os.getpid(), "ready": True}))
    await wait(done, WAIT * 5)
    await client.publish(idle, orjson.dumps(message(STOP)))
    await client.flush(int(WAIT))
    await client.close()


async def idle_subscriber(name: str, url: str, idle: str, results: Queue[Any]) -> None:
    client = await connect(url)
    arrived = asyncio.Event()

    async def on_message(msg: Any) -> None:
        orjson.loads(msg.data)
        arrived.set()

    await client.subscribe(idle, cb=on_message)
    await client.flush(int(WAIT))
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(arrived.wait(), WAIT * 6)  # blocks, as get(block=True) does
    results.put(("result", name, {}))
    await client.close()
