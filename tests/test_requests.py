"""Requests beyond the contract suite: the table of pending requests, answers to a
requester that is gone, a flood no one answers, and NATS with the bus's stream."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest
from _nats import NatsNode
from _workers import brief_requester
from conftest import Subscribers, eventually

from shellbot import Context, errors
from shellbot._codec import HEADER
from shellbot._pending import Pending
from shellbot.bus import Bus, Publisher
from shellbot.errors import ClosedError, NoResponders


def answer(text: bytes, sender: int = 7) -> bytes:
    return HEADER.pack(sender, 0) + text


def test_pending_hands_each_answer_to_its_request_and_counts_the_rest() -> None:
    pending = Pending(limit=10)
    first = pending.open("c", 1)
    every = pending.open("c", None)
    pending.answer(every.correlation, answer(b'"one"'))
    pending.answer(every.correlation, answer(b'"two"', sender=8))
    assert not every.done  # no count: it waits for its timeout
    pending.answer(first.correlation, answer(b"1"))
    assert first.done and [m.message for m in first.answers] == [1]
    pending.answer(first.correlation, answer(b"2"))  # a second answer to a request of one
    pending.answer(12345, answer(b"3"))  # a request that never was
    pending.answer(every.correlation, answer(b"not json"))
    pending.answer(every.correlation, b"short")
    pending.end(first)
    pending.end(every)
    pending.answer(every.correlation, answer(b'"late"'))
    assert [(m.message, m.sender, m.channel) for m in every.answers] == [
        ("one", 7, "c"),
        ("two", 8, "c"),
    ]
    assert pending.counters["late"] == 3
    assert pending.counters["dropped"] == 2
    assert pending.counters["answers"] == 3
    assert len(pending) == 0


def test_pending_says_no_responders_refuses_past_its_limit_and_closes_every_request() -> None:
    pending = Pending(limit=2)
    nobody = pending.open("c", 1)
    pending.answer(nobody.correlation, b"")
    assert nobody.done and nobody.no_responders and pending.counters["no_responders"] == 1
    waiting = [pending.open("c", 1), pending.open("c", None)]
    with pytest.raises(errors.TimeoutError, match="already wait"):
        pending.open("c", 1)
    pending.close(ClosedError("stopping"))
    assert all(request.done and isinstance(request.error, ClosedError) for request in waiting)
    with pytest.raises(ClosedError):
        pending.open("c", 1)


def test_correlation_ids_are_never_reused() -> None:
    pending = Pending(limit=4)
    seen = set()
    for _ in range(100):
        request = pending.open("c", 1)
        assert request.correlation not in seen
        seen.add(request.correlation)
        pending.end(request)


@pytest.mark.embedded_hub
def test_an_answer_to_a_requester_gone_is_dropped_and_counted_by_the_hub(
    bus: Bus, address: str, publisher: Publisher, subscribers: Subscribers
) -> None:
    if not address.startswith(("tcp://", "ipc://")):
        pytest.skip("the requester is another process")
    responder = subscribers(bus, "gone")
    child = multiprocessing.get_context("spawn").Process(
        target=brief_requester, args=(address, "gone")
    )
    child.start()
    request = responder.receive(block=True, timeout=20.0)
    child.join(20.0)
    assert request is not None and request.is_request and child.exitcode == 0
    request.reply("too late")  # never raises in the responder
    assert eventually(lambda: publisher.stats.get("replies_dropped") == 1)


def test_a_flood_of_requests_no_one_answers_stays_within_the_bus_bounds(
    address: str, subscribers: Subscribers
) -> None:
    bus = Bus(Context({"bus": {"address": address, "receive_high_water_mark": 50}}))
    bus.check()
    publisher = bus.publish()
    publisher.start()
    try:
        stalled = subscribers(bus, "flood")  # subscribes, never reads

        async def flood() -> list[BaseException | object]:
            asked = [bus.arequest("flood", n, timeout=0.5) for n in range(3000)]
            return await asyncio.gather(*asked, return_exceptions=True)

        outcomes = asyncio.run(asyncio.wait_for(flood(), 60.0))
        assert all(isinstance(outcome, errors.TimeoutError) for outcome in outcomes)
        stats = bus.request_stats
        assert stats["timeouts"] == 3000 and stats["requests"] == 3000
        from shellbot import _requests
        from shellbot._settings import BusSettings

        requester = _requests.existing_requester(BusSettings.from_context(bus.context))
        assert requester is not None and len(requester.pending) == 0  # nothing left waiting
        # The stalled responder held what its high-water marks allow (frames, which a
        # hub may fill with many requests), and counts what it lost.
        held = 0
        while stalled.receive(block=True, timeout=0.5) is not None:  # until quiet
            held += 1
        publisher.put("flood", "end")  # numbered after the requests: the gap shows
        while (message := stalled.receive(block=True, timeout=10.0)) is not None:
            if message.message == "end":
                break
            held += 1
        assert held + stalled.stats["missed"] == 3000
        if address.startswith("memory://"):
            assert held <= 50  # a frame per request there
    finally:
        publisher.stop(timeout=5.0)


def test_requests_on_nats_keep_out_of_the_bus_stream(jetstream: NatsNode) -> None:
    bus = Bus(Context({"bus": {"address": jetstream.url, "durable": True}}))
    publisher = bus.publish()
    publisher.start()
    try:
        stored = bus.subscribe("stored", durable="keeper")  # the stream exists now
        assert stored.wait_ready(timeout=10.0)
        publisher.put("stored", "kept")
        assert stored.get(block=True, timeout=10.0) == "kept"
        # JetStream would answer a request on a stored subject with its acknowledgement
        # (and count as a responder): requests travel outside the stream.
        with pytest.raises(NoResponders):
            bus.request("stored.nobody", 1, timeout=5.0)
        responder = bus.subscribe("asked")
        assert responder.wait_ready(timeout=10.0)

        def serve() -> None:
            message = responder.receive(block=True, timeout=10.0)
            if message is not None:
                message.reply("answered")

        threading.Thread(target=serve, daemon=True).start()
        started = time.monotonic()
        assert bus.request_all("asked", "q", timeout=1.0) and time.monotonic() - started >= 1.0
        responder.close()
        stored.close()
    finally:
        publisher.stop(timeout=5.0)


def test_an_answer_to_a_requester_gone_is_counted_by_its_responder_on_nats(
    nats_server: NatsNode,
) -> None:
    bus = Bus(Context({"bus": {"address": nats_server.url}}))
    responder = bus.subscribe("gone")
    assert responder.wait_ready(timeout=10.0)
    child = multiprocessing.get_context("spawn").Process(
        target=brief_requester, args=(nats_server.url, "gone")
    )
    child.start()
    request = responder.receive(block=True, timeout=20.0)
    child.join(20.0)
    assert request is not None and request.is_request and child.exitcode == 0
    request.reply("too late")  # never raises in the responder: the server says no one took it
    assert eventually(lambda: bus.request_stats.get("replies_dropped") == 1)
    responder.close()


def test_requests_and_answers_carry_numbers_past_64_bits(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    responder = subscribers(bus, "wide")

    def serve() -> None:
        request = responder.receive(block=True, timeout=10.0)
        if request is not None:
            request.reply(request.message * 2)

    threading.Thread(target=serve, daemon=True).start()
    assert bus.request("wide", 2**70, timeout=10.0) == 2**71
    assert bus.request_stats["dropped"] == 0
