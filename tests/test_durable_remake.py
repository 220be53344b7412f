"""A durable subscriber that dies, or loses its connection, while its consumer is made.

A relay between the subscriber and the server (``_request_trap``) forwards
one consumer request (a delete, or the first request that changes the
consumer) and then kills the subscriber's process or cuts its connection,
before the answer comes back: the moment when a consumer made in two steps
could be gone. The name's successor (a new process, or the same subscriber
once connected again) must be handed every message stored after the
position the name had.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from _durable import durable_bus, durable_starter
from _nats import NatsNode
from _request_trap import RequestTrap
from conftest import eventually
from test_durable import stream_state

spawn = multiprocessing.get_context("spawn")

REPETITIONS = 20
PER_REPETITION = 100  # messages stored while no subscriber of the name is there
API = "$JS.API.CONSUMER."
TRAPS = {
    # Right after the consumer's delete went out.
    "delete": (f"{API}DELETE.",),
    # Right after the first request that changes the consumer, whichever it is.
    "first change": (f"{API}DELETE.", f"{API}CREATE.", f"{API}DURABLE.CREATE."),
}


@pytest.fixture
def trap(jetstream: NatsNode) -> Iterator[RequestTrap]:
    relay = RequestTrap(jetstream.port)
    relay.start()
    yield relay
    relay.stop()


def collect(subscriber: Any, count: int, timeout: float = 20.0) -> list[Any]:
    """Up to ``count`` messages within ``timeout`` seconds, then whatever else comes
    within 0.5 s (asking for it also acknowledges the last)."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and (left := deadline - time.monotonic()) > 0:
        message = subscriber.get(block=True, timeout=left)
        if message is not None:
            got.append(message)
    while (message := subscriber.get(block=True, timeout=0.5)) is not None:
        got.append(message)
    return got


def consumer_names(node: NatsNode) -> list[str]:
    return sorted(c["name"] for c in stream_state(node).get("consumer_detail", []))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("requests", list(TRAPS))
@pytest.mark.parametrize("fault", ["kill", "cut"])
def test_a_subscriber_that_dies_or_is_cut_off_while_its_consumer_is_made_loses_nothing(
    jetstream: NatsNode, trap: RequestTrap, fault: str, requests: str
) -> None:
    bus = durable_bus(jetstream.url)
    publisher = bus.publish()
    first = bus.subscribe("kept", durable="kept")
    assert first.wait_ready(10.0)
    for number in range(10):
        publisher.put("kept", number)
    assert [first.get(block=True, timeout=5.0) for _ in range(10)] == list(range(10))
    assert first.get(block=True, timeout=0.2) is None  # the 10 are done with
    first.close()
    sprung_at: Counter[str] = Counter()
    for repetition in range(REPETITIONS):
        numbers = list(
            range(10 + PER_REPETITION * repetition, 10 + PER_REPETITION * (repetition + 1))
        )
        for number in numbers:
            publisher.put("kept", number)
        stored = numbers[-1] + 1
        assert eventually(lambda: publisher.stats["stored"] == stored, timeout=20.0)  # noqa: B023
        if fault == "kill":
            go, reports = spawn.Event(), spawn.Queue()
            process = spawn.Process(
                target=durable_starter, args=(trap.url, "kept", ["kept"], go, reports)
            )
            process.start()
            trap.arm(TRAPS[requests], victim=process.pid)
            go.set()
            assert trap.sprung.wait(30.0), "no consumer request went through the relay"
            process.join(10.0)
            assert process.exitcode == -signal.SIGKILL
            # The successor: a new subscriber of the same name (here, in this process).
            successor = bus.subscribe("kept", durable="kept")
        else:
            trap.arm(TRAPS[requests])
            # The same subscriber goes on once connected again (the relay springs once).
            successor = durable_bus(trap.url).subscribe("kept", durable="kept")
            assert trap.sprung.wait(30.0), "no consumer request went through the relay"
        sprung_at[trap.sprung_on.decode().split(".")[3]] += 1  # CREATE, DELETE...
        got = collect(successor, len(numbers))
        successor.close()
        lost = sorted(set(numbers) - set(got))
        assert not lost, (
            f"repetition {repetition}, sprung at {trap.sprung_on!r}: {len(lost)} of "
            f"{len(numbers)} lost, missed {successor.stats['missed']}"
        )
        assert got == numbers, f"repetition {repetition}: out of order or twice"
        # What the successor settled on is the name's one consumer: none left behind.
        assert len(consumer_names(jetstream)) == 1, consumer_names(jetstream)
    assert publisher.stop()
    bus.subscribe("kept", durable="kept").close(forget=True)
    assert consumer_names(jetstream) == []
    print(f"{fault} after {requests}: 0 lost in {REPETITIONS}, sprung at {dict(sprung_at)}")


def test_of_a_names_two_consumers_the_newer_holds_its_position_and_forget_deletes_both(
    jetstream: NatsNode,
) -> None:
    import asyncio

    import nats

    bus = durable_bus(jetstream.url)
    publisher = bus.publish()
    for number in range(20):  # one stored message each: stream sequences 1 to 20
        publisher.put("two", number)
        assert eventually(lambda: publisher.stats["stored"] == number + 1)  # noqa: B023
    assert publisher.stop()

    async def made_by_a_predecessor() -> None:
        # As a process killed between the making of a consumer and the deletion of the
        # one it replaced leaves them: the older at message 0, the newer at message 10.
        client = await nats.connect(jetstream.url)
        for name, generation, start in (("two", 4, 1), ("two~2", 5, 11)):
            await client.jetstream().add_consumer(
                "SHELLBOT",
                durable_name=name,
                deliver_subject=f"nobody.{generation}",
                deliver_policy="by_start_sequence",
                opt_start_seq=start,
                ack_policy="explicit",
                metadata={"shellbot-generation": str(generation)},
            )
        await client.close()

    asyncio.run(made_by_a_predecessor())
    assert consumer_names(jetstream) == ["two", "two~2"]
    successor = bus.subscribe("two", durable="two")
    assert collect(successor, 10) == list(range(10, 20))
    assert consumer_names(jetstream) == ["two"]  # made anew as the newer; both old ones gone
    successor.close()
    again = bus.subscribe("two", durable="two")
    assert again.wait_ready(10.0)
    assert again.get(block=True, timeout=0.5) is None
    assert consumer_names(jetstream) == ["two~2"]
    again.close(forget=True)
    assert consumer_names(jetstream) == []
