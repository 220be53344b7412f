"""A publisher's runs stored out of order in the stream (a run retried for want of an
acknowledgement is stored after those that followed it): a durable subscriber hands
each message once, none dropped. Found by the fault harness (docs/faults.md)."""

from __future__ import annotations

import asyncio

import nats
import orjson
from _durable import durable_bus
from _nats import NatsNode

from shellbot._codec import HEADER


def _store(url: str, channel: str, sender: int, sequences: list[int]) -> None:
    """Stores one message per sequence number of ``sender`` on ``channel``, in this order,
    as the bus's publisher frames them (header, then the JSON), each with its own id."""

    async def store() -> None:
        client = await nats.connect(url)
        stream = client.jetstream()
        for sequence in sequences:
            body = HEADER.pack(sender, sequence) + orjson.dumps(sequence)
            headers = {"Nats-Msg-Id": f"{sender:x}-{channel}-{sequence}"}
            await stream.publish(f"shellbot.c.{channel}", body, headers=headers)
        await client.close()

    asyncio.run(store())


def test_a_senders_first_message_stored_after_its_second_is_handed(jetstream: NatsNode) -> None:
    subscriber = durable_bus(jetstream.url).subscribe("late", durable="late")
    assert subscriber.wait_ready(15.0)
    _store(jetstream.url, "late", sender=0xFEED, sequences=[2, 1, 3])
    handed = []
    while (message := subscriber.receive(block=True, timeout=3.0)) is not None:
        handed.append(message.sequence)
    stats = subscriber.stats
    subscriber.close(forget=True)
    assert sorted(handed) == [1, 2, 3], (handed, stats)
