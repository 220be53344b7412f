"""T1d, durable T1 on NATS JetStream: ours (``bus.durable``, a durable subscriber)
against bare nats-py doing the same, on the same server, in the same run.

One publisher process puts the messages of T1 on one channel; one durable
subscriber process receives them all. A run ends when the subscriber has them
all and the publisher knows the server stored them all: ours when
``publisher.stop()`` returned (it waits for every acknowledgement), the anchor
when ``publish_async_completed()`` did.

The anchor is what a careful nats-py user writes: the stream made with
``add_stream`` as the bus makes its own (the same subjects, limits, file
storage, 1 replica, 120 s of deduplication), ``js.publish_async()`` of each
message with a ``Nats-Msg-Id`` of its own, its futures kept and checked once
``publish_async_completed()`` returned, and a durable push consumer
(``js.subscribe(durable=..., manual_ack=True)``) whose callback decodes and
acknowledges each message.

The latency from ``put()`` to the server's acknowledgement is measured in a
paced run of its own (one message each ``interval`` seconds, the subscriber
receiving): ours through ``record_acknowledgements()`` of the transport's
``jetstream.publishing``, which the publishing process calls for that run only;
the anchor from ``publish_async()`` to its future's done callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import orjson

from . import _nats
from ._runs import OURS, Crew, Network, RunFailed
from ._workers import IDLE_END, WAIT, _bus

CHANNEL = "bench"
DURABLE = "bench-t1d"
UNACKNOWLEDGED = -1  # the latency of a message whose acknowledgement never came


def _body(counter: int) -> dict[str, Any]:
    return {"from": "direct-42", "input": {"key": "vote", "value": "yes"}, "counter": counter}


def _paced(count: int, interval: float) -> Any:
    """Yields 0..count-1, each at its slot ``interval`` apart (not before)."""
    slot = time.perf_counter()
    for counter in range(count):
        wait = slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        yield counter
        slot += interval


class _Order:
    """What a receiver saw of the counters: out of order or repeated ones."""

    def __init__(self) -> None:
        self.last = -1
        self.disordered = 0

    def see(self, counter: int) -> None:
        if counter != self.last + 1:
            self.disordered += 1
        self.last = counter


# -- ours -----------------------------------------------------------------------------


def ours_publisher(
    name: str, settings: dict[str, Any], count: int, interval: float, go: Any, results: Any
) -> None:
    """Puts ``count`` messages (paced when ``interval``), then ``stop()``: every one stored."""
    from shellbot._transports.nats.jetstream.publishing import record_acknowledgements

    recorded: list[tuple[int, int, float]] = []
    if interval:
        record_acknowledgements(recorded)
    bus = _bus(settings)
    publisher = bus.publish()
    publisher.start()
    results.put(("up", name, {"pid": os.getpid()}))
    if not go.wait(WAIT):
        return
    put = publisher.put
    put_times: list[float] = []
    started = time.perf_counter()
    if interval:
        clock = time.perf_counter
        for counter in _paced(count, interval):
            put_times.append(clock())
            put(CHANNEL, _body(counter))
    else:
        for counter in range(count):
            put(
                CHANNEL,
                {"from": "direct-42", "input": {"key": "vote", "value": "yes"}, "counter": counter},
            )
    ended = time.perf_counter()
    stored = publisher.stop(timeout=WAIT)
    confirmed = time.perf_counter()
    stats = publisher.stats
    record_acknowledgements(None)
    acks_ns = [UNACKNOWLEDGED] * len(put_times)  # in the order put
    for first, messages, acknowledged in recorded:  # sequence numbers count from 1
        for sequence in range(first, min(first + messages, len(put_times) + 1)):
            acks_ns[sequence - 1] = round((acknowledged - put_times[sequence - 1]) * 1e9)
    report = {
        "started": started,
        "ended": ended,
        "confirmed": confirmed,
        "all_stored": stored,
        "not_stored": stats.get("not_stored", 0) + stats.get("unconfirmed", 0),
        "acks_ns": acks_ns,
    }
    results.put(("sent", name, report))


def ours_subscriber(name: str, settings: dict[str, Any], expected: int, results: Any) -> None:
    """A durable subscriber: receives until ``expected`` came (or none came for a while)."""
    bus = _bus(settings)
    subscriber = bus.subscribe(CHANNEL, durable=DURABLE)
    ready = subscriber.wait_ready(timeout=WAIT)
    results.put(("ready", name, {"pid": os.getpid(), "ready": ready}))
    get = subscriber.get
    order = _Order()
    received = 0
    idle = 0.0
    while received < expected:
        message = get(True, WAIT if received == 0 else IDLE_END)
        if message is None:
            idle = IDLE_END
            break
        order.see(message["counter"])
        received += 1
    ended = time.perf_counter() - idle
    report = {"received": received, "ended": ended, "disordered": order.disordered}
    results.put(("result", name, report))
    subscriber.close(forget=True)


# -- the anchor: bare nats-py --------------------------------------------------------


def _stream_config(run_prefix: str) -> Any:
    """The stream as the bus makes its own for ``run_prefix``, with its default settings."""
    from nats.js import api

    from shellbot._settings import BusSettings
    from shellbot._transports.nats.jetstream.stream import DUPLICATE_WINDOW, stream_name

    defaults = BusSettings()
    return api.StreamConfig(
        name=stream_name(run_prefix),
        subjects=[f"{run_prefix}.c.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType(defaults.stream_storage),
        num_replicas=1,
        max_age=defaults.stream_max_age,
        max_bytes=defaults.stream_max_bytes,
        duplicate_window=DUPLICATE_WINDOW,
    )


def anchor_publisher(
    name: str, url: str, run_prefix: str, count: int, interval: float, go: Any, results: Any
) -> None:
    asyncio.run(_publisher(name, url, run_prefix, count, interval, go, results))


async def _publisher(
    name: str, url: str, run_prefix: str, count: int, interval: float, go: Any, results: Any
) -> None:
    client = await _nats._connect(url)
    jetstream = client.jetstream()
    subject = _nats.subject(run_prefix, CHANNEL)
    results.put(("up", name, {"pid": os.getpid()}))
    if await _nats._wait(go, WAIT):
        publish, dumps = jetstream.publish_async, orjson.dumps
        futures = []
        acks_ns = [UNACKNOWLEDGED] * count if interval else []  # in the order published
        started = time.perf_counter()
        if interval:
            clock = time.perf_counter
            slot = clock()
            for counter in range(count):
                wait = slot - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                slot += interval
                put_at = clock()
                future = await publish(
                    subject, dumps(_body(counter)), headers={"Nats-Msg-Id": f"{name}-{counter}"}
                )
                future.add_done_callback(
                    lambda _, counter=counter, put_at=put_at: acks_ns.__setitem__(
                        counter, round((clock() - put_at) * 1e9)
                    )
                )
                futures.append(future)
        else:
            for counter in range(count):
                futures.append(
                    await publish(
                        subject,
                        dumps(
                            {
                                "from": "direct-42",
                                "input": {"key": "vote", "value": "yes"},
                                "counter": counter,
                            }
                        ),
                        headers={"Nats-Msg-Id": f"{name}-{counter}"},
                    )
                )
        ended = time.perf_counter()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(jetstream.publish_async_completed(), WAIT)
        confirmed = time.perf_counter()
        failed = sum(1 for future in futures if not future.done() or future.exception())
        report = {
            "started": started,
            "ended": ended,
            "confirmed": confirmed,
            "all_stored": failed == 0,
            "not_stored": failed,
            "acks_ns": acks_ns,
        }
        results.put(("sent", name, report))
    await client.close()


def anchor_subscriber(name: str, url: str, run_prefix: str, expected: int, results: Any) -> None:
    asyncio.run(_subscriber(name, url, run_prefix, expected, results))


async def _subscriber(name: str, url: str, run_prefix: str, expected: int, results: Any) -> None:
    client = await _nats._connect(url)
    jetstream = client.jetstream()
    config = _stream_config(run_prefix)
    await jetstream.add_stream(config)
    loads = orjson.loads
    order = _Order()
    state = {"received": 0}
    finished = asyncio.Event()
    ended = 0.0

    async def on_message(msg: Any) -> None:
        nonlocal ended
        order.see(loads(msg.data)["counter"])
        await msg.ack()
        state["received"] += 1
        if state["received"] == expected:
            ended = time.perf_counter()
            finished.set()

    await jetstream.subscribe(
        _nats.subject(run_prefix, CHANNEL),
        durable=DURABLE,
        cb=on_message,
        manual_ack=True,
        stream=config.name,
    )
    results.put(("ready", name, {"pid": os.getpid(), "ready": True}))
    last_seen = await _nats._until_done(finished, lambda: state["received"])
    if last_seen is not None:
        ended = last_seen
    with contextlib.suppress(Exception):
        await client.flush(int(WAIT))  # the last acknowledgements
    report = {"received": state["received"], "ended": ended, "disordered": order.disordered}
    results.put(("result", name, report))
    await client.close()


# -- a run ----------------------------------------------------------------------------


def delete_stream(url: str, run_prefix: str) -> None:
    """Deletes the run's stream, so that no run's messages stay on the server."""
    from nats.js import errors as js_errors

    from shellbot._transports.nats.jetstream.stream import stream_name

    async def delete() -> None:
        client = await _nats._connect(url)
        try:
            with contextlib.suppress(js_errors.NotFoundError):
                await client.jetstream().delete_stream(stream_name(run_prefix))
        finally:
            await client.close()

    with contextlib.suppress(Exception):  # a server gone already keeps nothing
        asyncio.run(delete())


def flow(side: str, count: int, interval: float, network: Network) -> dict[str, Any]:
    """One run of T1d: ``count`` messages, as fast as put() goes (``interval`` 0) or
    one each ``interval`` seconds; returns the rate, what was lost, and (paced) the
    latencies from put to the server's acknowledgement."""
    crew = Crew()
    go = crew.event()
    run_prefix = _nats.prefix()
    url = network.url
    try:
        if side == OURS:
            settings = {"address": url, "nats": {"prefix": run_prefix}, "durable": True}
            crew.spawn(ours_subscriber, "subscriber", settings, count, crew.results)
            ready = crew.collect("ready", 1)
            crew.spawn(ours_publisher, "publisher", settings, count, interval, go, crew.results)
        else:
            crew.spawn(anchor_subscriber, "subscriber", url, run_prefix, count, crew.results)
            ready = crew.collect("ready", 1)
            crew.spawn(
                anchor_publisher, "publisher", url, run_prefix, count, interval, go, crew.results
            )
        if not ready["subscriber"]["ready"]:
            raise RunFailed("the durable subscriber was not ready in time")
        crew.collect("up", 1)
        counted = network.counters()
        go.set()
        sent = crew.collect("sent", 1, timeout=WAIT * 5)["publisher"]
        live = crew.collect("result", 1, timeout=WAIT * 5)["subscriber"]
        after = network.counters()
    finally:
        go.set()
        crew.close()
        delete_stream(url, run_prefix)
    ended = max(sent["confirmed"], live["ended"])
    result: dict[str, Any] = {
        "rate": live["received"] / (ended - sent["started"]),
        "delivered": live["received"],
        "lost": count - live["received"],
        "not_stored": sent["not_stored"],
        "disordered": live["disordered"],
        "seconds": ended - sent["started"],
        "put_rate": count / (sent["ended"] - sent["started"]),
        "stored_after": sent["confirmed"] - sent["started"],
        "received_after": live["ended"] - sent["started"],
        "acks_ns": sent["acks_ns"],
        "unacknowledged": sum(1 for latency in sent["acks_ns"] if latency == UNACKNOWLEDGED),
    }
    if counted is not None and after is not None:
        result["server"] = {key: after[key] - counted[key] for key in after}
    return result
