"""The contract every transport fulfils: run once per transport (tcp, ipc, inproc, memory,
nats)."""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from collections.abc import Callable
from threading import Thread
from typing import Any

import pytest
from conftest import Subscribers, eventually

from shellbot import Context, errors
from shellbot._publishing.state import Phase
from shellbot.bus import Bus, Message, Publisher, Subscriber
from shellbot.errors import ClosedError, NoResponders

VALUES = [
    {"from": "direct-1", "input": {"key": "vote", "value": "yes"}},
    [1, "two", 3.5, None, True],
    "déjà vu — 投票 ✓",
    42,
    -7,
    2.5,
    True,
    False,
    0,
    0.0,
    "",
    [],
    {},
]


def test_every_json_value_but_none_comes_back_equal(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "values")
    for value in VALUES:
        publisher.put("values", value)
    received = [subscriber.get(block=True, timeout=5.0) for _ in VALUES]
    assert received == VALUES
    assert [type(value) for value in received] == [type(value) for value in VALUES]
    assert subscriber.get() is None


def test_channels_match_exactly(bus: Bus, publisher: Publisher, subscribers: Subscribers) -> None:
    chan, channel, everything = (
        subscribers(bus, "chan"),
        subscribers(bus, "channel"),
        subscribers(bus, ""),
    )
    publisher.put("channel", "long")
    publisher.put("chan", "short")
    publisher.put("cha", "shorter")
    assert channel.get(block=True, timeout=5.0) == "long"
    assert chan.get(block=True, timeout=5.0) == "short"
    received = [everything.receive(block=True, timeout=5.0) for _ in range(3)]
    assert [(m.channel, m.message) for m in received] == [
        ("channel", "long"),
        ("chan", "short"),
        ("cha", "shorter"),
    ]
    # Whatever else arrived would be here by now: the last message sent has arrived.
    assert chan.get() is None
    assert channel.get() is None


def test_a_list_of_channels_publishes_once_on_each(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    both = subscribers(bus, ["a", "b"])
    only_b = subscribers(bus, "b")
    publisher.put(["a", "b"], {"n": 1})
    assert both.get(block=True, timeout=5.0) == {"n": 1}
    assert both.get(block=True, timeout=5.0) == {"n": 1}
    assert only_b.get(block=True, timeout=5.0) == {"n": 1}
    publisher.put("b", "end")
    assert both.get(block=True, timeout=5.0) == "end"
    assert only_b.get(block=True, timeout=5.0) == "end"


def test_unicode_channels_are_exact_too(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "vote-é")
    publisher.put("vote-éé", "no")
    publisher.put("vote-é", "yes")
    assert subscriber.receive(block=True, timeout=5.0).channel == "vote-é"


@pytest.mark.parametrize(
    ("channels", "error"),
    [
        (None, ValueError),
        ("", ValueError),
        ([], ValueError),
        ((), ValueError),
        (["ok", ""], ValueError),
        (42, TypeError),
        (b"bytes", TypeError),
        (["ok", 42], TypeError),
    ],
)
def test_put_refuses_a_bad_channel_and_queues_nothing(
    bus: Bus,
    publisher: Publisher,
    channels: object,
    error: type[Exception],
    subscribers: Subscribers,
) -> None:
    subscriber = subscribers(bus, ["ok", ""])
    with pytest.raises(error, match="channel"):
        publisher.put(channels, {"a": 1})
    publisher.put("ok", "after")
    assert subscriber.get(block=True, timeout=5.0) == "after"
    assert subscriber.get() is None


@pytest.mark.parametrize(
    "channels", ["\ud800", "ok.\udcff", ["ok", "lone \ud800"]], ids=["alone", "after", "list"]
)
def test_a_channel_that_is_not_text_is_a_message_error_everywhere(
    bus: Bus, publisher: Publisher, channels: object, subscribers: Subscribers
) -> None:
    """A lone surrogate (a str decoded with surrogateescape) has no UTF-8."""
    subscriber = subscribers(bus, ["ok", ""])
    with pytest.raises(errors.MessageError, match="lone surrogate"):
        publisher.put(channels, {"a": 1})
    with pytest.raises(errors.MessageError, match="lone surrogate"):
        bus.subscribe(channels)  # type: ignore[arg-type]
    with pytest.raises(errors.MessageError, match="lone surrogate"):
        bus.subscribe(["ok.*", "\ud800.>"], pattern=True)
    with pytest.raises(errors.MessageError, match="lone surrogate"):
        subscriber.subscribe(channels)  # type: ignore[arg-type]
    publisher.put("ok", "after")  # nothing was queued or numbered: no gap
    assert subscriber.get(block=True, timeout=5.0) == "after"
    assert subscriber.get() is None
    assert subscriber.stats["missed"] == 0


@pytest.mark.parametrize("length", [5000, 100_000])
def test_a_long_channel_is_a_channel(
    bus: Bus, publisher: Publisher, subscribers: Subscribers, length: int
) -> None:
    channel = "L" * length
    subscriber = subscribers(bus, [channel])
    neighbour = subscribers(bus, [channel[:-1] + "M"])
    publisher.put(channel, "long")
    publisher.put(channel[:-1] + "M", "neighbour")
    assert subscriber.receive(block=True, timeout=10.0).channel == channel
    assert neighbour.get(block=True, timeout=10.0) == "neighbour"
    assert subscriber.get() is None


@pytest.mark.parametrize("channels", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_a_subscriber_of_no_channel_is_refused_as_put_refuses_it(
    bus: Bus, publisher: Publisher, channels: object, subscribers: Subscribers
) -> None:
    hint = r"call subscriber\.subscribe\(\['more', \.\.\.\]\) on the live subscriber"
    with pytest.raises(ValueError, match=hint):
        bus.subscribe(channels)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one channel"):
        Subscriber(bus.context, [])
    with pytest.raises(ValueError, match="it got None"):
        bus.subscribe(None)  # type: ignore[arg-type]
    # On a live subscriber, an empty list adds nothing: it stays live on its channels.
    subscriber = subscribers(bus, "live")
    subscriber.subscribe(channels)  # type: ignore[arg-type]
    subscriber.unsubscribe([])
    publisher.put("live", "still here")
    assert subscriber.get(block=True, timeout=5.0) == "still here"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (None, ValueError),
        (math.nan, ValueError),
        ({"x": [math.inf]}, ValueError),
        (-math.inf, ValueError),
        ({1, 2}, TypeError),
        (object(), TypeError),
        ({"when": time}, TypeError),
    ],
)
def test_put_refuses_a_message_json_cannot_carry(
    bus: Bus,
    publisher: Publisher,
    message: object,
    error: type[Exception],
    subscribers: Subscribers,
) -> None:
    subscriber = subscribers(bus, "ok")
    with pytest.raises(error):
        publisher.put(["ok", "ok"], message)
    publisher.put("ok", "after")
    assert subscriber.get(block=True, timeout=5.0) == "after"
    assert subscriber.get() is None


def test_a_message_over_the_size_limit_is_refused(address: str, subscribers: Subscribers) -> None:
    context = Context({"bus": {"address": address, "max_message_size": 1000}})
    bus = Bus(context)
    publisher = bus.publish()
    publisher.start()
    try:
        subscriber = subscribers(bus, "big")
        with pytest.raises(ValueError, match="max_message_size"):
            publisher.put("big", "x" * 1000)
        publisher.put("big", "x" * 990)
        assert subscriber.get(block=True, timeout=5.0) == "x" * 990
    finally:
        publisher.stop()


def test_get_returns_none_at_once_and_waits_when_asked(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "quiet")
    started = time.monotonic()
    assert subscriber.get() is None
    assert subscriber.get(block=True, timeout=0.2) is None
    waited = time.monotonic() - started
    assert 0.19 <= waited < 2.0

    def later() -> None:
        publisher.put("quiet", "now")

    timer = threading.Timer(0.05, later)
    timer.start()
    try:
        assert subscriber.get(block=True) == "now"
    finally:
        timer.cancel()


def test_100k_messages_arrive_all_and_in_order(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    count = 100_000
    subscriber = subscribers(bus, "stream")
    received: list[object] = []

    def read() -> None:
        for _ in range(count):
            message = subscriber.get(block=True, timeout=10.0)
            if message is None:
                return
            received.append(message)

    reader = threading.Thread(target=read)
    reader.start()
    for index in range(count):
        publisher.put("stream", index)
    reader.join(timeout=60.0)
    assert not reader.is_alive()
    assert received == list(range(count))
    assert subscriber.stats["missed"] == 0


def test_messages_put_before_start_are_delivered_once_it_runs(context: Context) -> None:
    bus = Bus(context)
    subscriber = bus.subscribe("early")  # connected (or connecting) before any hub exists
    publisher = bus.publish()
    for index in range(10):
        publisher.put("early", index)
    publisher.start()
    try:
        assert [subscriber.get(block=True, timeout=5.0) for _ in range(10)] == list(range(10))
    finally:
        publisher.stop()


@pytest.mark.embedded_hub
def test_wait_ready_is_false_without_a_hub(tcp_address: str) -> None:
    bus = Bus(Context({"bus": {"address": tcp_address}}))
    subscriber = bus.subscribe("nobody")
    started = time.monotonic()
    assert subscriber.wait_ready(timeout=0.3) is False
    assert time.monotonic() - started < 2.0


def test_the_switch_stops_the_publisher_within_a_second(context: Context) -> None:
    publisher = Bus(context).publish()
    publisher.start()
    assert publisher.is_alive()
    context.set("general.switch", "off")
    started = time.monotonic()
    publisher.join(timeout=3.0)
    assert not publisher.is_alive()
    assert time.monotonic() - started < 1.0


def test_the_pill_stops_after_what_was_put_before(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "last")
    for index in range(1000):
        publisher.put("last", index)
    publisher.fan.put(None)
    publisher.join(timeout=5.0)
    assert not publisher.is_alive()
    received = [subscriber.get(block=True, timeout=5.0) for _ in range(1000)]
    assert received == list(range(1000))


def test_a_pill_put_before_start_stops_the_publisher_after_what_was_put_before(
    context: Context,
) -> None:
    """The original's publisher tool: put(), fan.put(None), then start() and join()."""
    bus = Bus(context)
    subscriber = bus.subscribe("tool")  # connected (or connecting) before any hub exists
    publisher = bus.publish()
    for index in range(32):
        publisher.put("tool", index)
    publisher.fan.put(None)
    publisher.start()
    try:
        publisher.join(timeout=10.0)
        assert not publisher.is_alive()
        assert [subscriber.get(block=True, timeout=5.0) for _ in range(32)] == list(range(32))
    finally:
        publisher.stop()


@pytest.mark.timeout(60)  # run() below runs in this thread: a bound if it never returned
def test_run_called_directly_returns_when_the_switch_is_off(context: Context) -> None:
    context.set("general.switch", "off")
    publisher = Bus(context).publish()
    handler = signal.getsignal(signal.SIGINT)
    started = time.monotonic()
    publisher.run()
    assert time.monotonic() - started < 5.0
    # It held the hub, as start() would have; a NATS server is the hub itself.
    assert publisher.holds_hub is not context.get("bus.address").startswith("nats://")
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's signals are its own


@pytest.mark.timeout(60)
def test_run_called_directly_sends_what_was_put_and_returns_on_a_pill(context: Context) -> None:
    bus = Bus(context)
    subscriber = bus.subscribe("foreground")
    publisher = bus.publish()
    for index in range(32):
        publisher.put("foreground", index)
    publisher.fan.put(None)
    publisher.run()  # holds the hub, forwards the 32 messages, then takes the pill
    assert publisher.holds_hub is not context.get("bus.address").startswith("nats://")
    received = [subscriber.get(block=True, timeout=5.0) for _ in range(32)]
    assert received == list(range(32))


@pytest.mark.timeout(60)
def test_run_called_directly_uses_the_hub_that_holds_the_address(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, "through")
    foreground = bus.publish()
    foreground.put("through", "before the pill")
    foreground.fan.put(None)
    foreground.run()
    assert not foreground.holds_hub
    assert subscriber.get(block=True, timeout=5.0) == "before the pill"
    # A pill put while run() runs, from another thread, stops it too.
    runner = threading.Thread(target=foreground.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 5.0
    while foreground._life.phase is not Phase.RUNNING_HERE and time.monotonic() < deadline:
        runner.join(0.01)
    foreground.put("through", "while running")
    foreground.fan.put(None)
    runner.join(timeout=10.0)
    assert not runner.is_alive()
    assert subscriber.get(block=True, timeout=5.0) == "while running"
    assert publisher.is_alive()  # the one holding the hub is not affected


def test_stopping_twice_or_never_started_is_harmless(bus: Bus) -> None:
    never = bus.publish()
    never.fan.put(None)
    assert never.stop() is True
    publisher = bus.publish()
    publisher.start()
    assert publisher.stop(timeout=5.0) is True
    publisher.fan.put(None)
    assert publisher.stop(timeout=5.0) is True
    assert not publisher.is_alive()


def test_a_second_publisher_uses_the_hub_of_the_first(
    bus: Bus, publisher: Publisher, address: str, subscribers: Subscribers
) -> None:
    second = bus.publish()
    second.start()
    try:
        # On a broker's address (nats://) the server is the hub: no publisher holds it.
        assert publisher.holds_hub is not address.startswith("nats://")
        assert not second.holds_hub
        subscriber = subscribers(bus, "both")
        publisher.put("both", 1)
        second.put("both", 2)
        assert sorted([subscriber.get(block=True, timeout=5.0) for _ in range(2)]) == [1, 2]
    finally:
        second.stop()


@pytest.mark.embedded_hub
def test_another_publisher_takes_over_the_hub(
    bus: Bus, address: str, subscribers: Subscribers
) -> None:
    if address.startswith("inproc://"):
        pytest.skip("inproc connections end with the socket they reach: no takeover there")
    first, second = bus.publish(), bus.publish()
    first.start()
    second.start()
    try:
        subscriber = subscribers(bus, "relay")
        assert first.holds_hub and not second.holds_hub
        assert first.stop(timeout=5.0)
        deadline = time.monotonic() + 5.0
        while not second.holds_hub and time.monotonic() < deadline:
            second.join(0.05)  # a bounded wait; the takeover is tried every 0.5 s
        assert second.holds_hub
        assert subscriber.wait_ready(timeout=5.0)
        second.put("relay", "through the new hub")
        assert subscriber.get(block=True, timeout=5.0) == "through the new hub"
    finally:
        second.stop()


# -- requests and answers -------------------------------------------------------------


def _respond(subscriber: Subscriber, answer: Callable[[Message], Any], times: int = 0) -> Thread:
    """Answers the requests that come to ``subscriber``, in a thread, until it is closed
    (or after ``times`` requests)."""

    def serve() -> None:
        served = 0
        for message in subscriber:
            if message.is_request:
                message.reply(answer(message))
                served += 1
                if served == times:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_request_returns_the_first_answer(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    _respond(subscribers(bus, "double"), lambda request: {"twice": request.message * 2})
    assert bus.request("double", 21, timeout=5.0) == {"twice": 42}
    assert [bus.request("double", n, timeout=5.0)["twice"] for n in range(20)] == [
        2 * n for n in range(20)
    ]
    assert bus.request_stats["answers"] == 21


def test_a_request_no_one_subscribes_to_raises_no_responders_at_once(
    bus: Bus, publisher: Publisher
) -> None:
    with pytest.raises(NoResponders, match="'nobody'"):
        bus.request("nobody", 1, timeout=10.0)  # the first one also makes the inbox live
    started = time.monotonic()
    with pytest.raises(NoResponders):
        bus.request("nobody.else", 1, timeout=10.0)
    assert time.monotonic() - started < 0.05
    with pytest.raises(NoResponders):
        bus.request_all("nobody", 1, timeout=10.0)
    assert bus.request_stats["no_responders"] == 3


def test_a_request_no_one_answers_raises_timeout_naming_channel_and_timeout(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscribers(bus, "silent")  # subscribes, never answers
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError, match=r"'silent' within 0\.3 s"):
        bus.request("silent", "anyone?", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert bus.request_all("silent", "anyone?", timeout=0.2) == []


def test_a_late_answer_never_satisfies_a_later_request(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    responder = subscribers(bus, "slow")
    with pytest.raises(errors.TimeoutError):
        bus.request("slow", "first", timeout=0.2)
    first = responder.receive(block=True, timeout=5.0)
    assert first is not None and first.message == "first"
    first.reply("answer to first")  # its requester gave up: late
    _respond(responder, lambda request: f"answer to {request.message}")
    assert bus.request("slow", "second", timeout=5.0) == "answer to second"
    assert eventually(lambda: bus.request_stats["late"] == 1)


def test_request_all_gathers_the_answers_with_their_senders(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    for name in ("a", "b", "c"):
        _respond(subscribers(bus, "vote"), lambda request, name=name: name)
    started = time.monotonic()
    answers = bus.request_all("vote", "who?", timeout=1.0)
    assert time.monotonic() - started >= 1.0  # no count: everything within the timeout
    assert sorted(answer.message for answer in answers) == ["a", "b", "c"]
    assert {(answer.channel, answer.sequence) for answer in answers} == {("vote", 0)}
    sender = publisher_sender_of(bus)
    assert {answer.sender for answer in answers} == {sender}  # one process answered
    started = time.monotonic()
    assert len(bus.request_all("vote", "who?", timeout=10.0, count=2)) == 2
    assert time.monotonic() - started < 5.0  # returned once two came


def publisher_sender_of(bus: Bus) -> int:
    """The sender id of this process's messages (and answers) on the bus."""
    from shellbot._publishing import outbox as _outbox
    from shellbot._settings import BusSettings

    return _outbox.outbox_for(BusSettings.from_context(bus.context)).sender_id


def test_a_request_comes_as_a_message_a_put_does_not(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    responder = subscribers(bus, "mixed")
    publisher.put("mixed", "plain")
    plain = responder.receive(block=True, timeout=5.0)
    assert plain is not None and not plain.is_request
    with pytest.raises(ValueError, match="not a request"):
        plain.reply("no")
    # get() hands the payload alone: a requester it cannot answer times out.
    with pytest.raises(errors.TimeoutError):
        bus.request("mixed", {"q": 1}, timeout=0.2)
    assert responder.get(block=True, timeout=5.0) == {"q": 1}


def test_a_reply_that_cannot_be_sent_raises_in_the_responder(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    responder = subscribers(bus, "picky")
    outcome: list[Any] = []

    def ask() -> None:
        outcome.append(bus.request("picky", "q", timeout=5.0))

    asking = threading.Thread(target=ask)
    asking.start()
    request = responder.receive(block=True, timeout=5.0)
    assert request is not None and request.is_request
    with pytest.raises(TypeError, match="JSON"):
        request.reply({1, 2})
    with pytest.raises(ValueError):
        request.reply(math.nan)
    request.reply("fine")  # nothing was sent before: the requester gets this one
    asking.join(5.0)
    assert outcome == ["fine"]


@pytest.mark.parametrize(
    ("channel", "message", "error"),
    [
        ("", 1, errors.MessageError),
        (None, 1, TypeError),
        (["a", "b"], 1, TypeError),
        (7, 1, TypeError),
        ("fine", None, errors.MessageError),
        ("fine", {1, 2}, TypeError),
        ("fine", math.inf, errors.MessageError),
    ],
)
def test_a_request_the_bus_refuses_raises_as_put_does(
    bus: Bus, publisher: Publisher, channel: Any, message: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        bus.request(channel, message, timeout=1.0)
    with pytest.raises(error):
        bus.request_all(channel, message, timeout=1.0)
    assert bus.request_stats.get("requests", 0) == 0


def test_requests_take_timeouts_and_counts_that_make_sense(bus: Bus) -> None:
    for timeout in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError):
            bus.request("x", 1, timeout=timeout)
    with pytest.raises(TypeError):
        bus.request("x", 1, timeout="1")  # type: ignore[arg-type]
    for count in (0, -2, 1.5):
        with pytest.raises(ValueError):
            bus.request_all("x", 1, count=count)  # type: ignore[arg-type]


def test_requests_and_answers_on_asyncio(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    responder = subscribers(bus, "async")

    async def main() -> tuple[Any, list[Message], Any]:
        async def serve() -> None:
            async for message in responder:
                message.reply(message.message + 1)

        serving = asyncio.get_running_loop().create_task(serve())
        try:
            asked = (bus.arequest("async", n, timeout=5.0) for n in range(8))
            answers = await asyncio.gather(*asked)
            every = await bus.arequest_all("async", 100, timeout=5.0, count=1)
            with pytest.raises(NoResponders):
                await bus.arequest("nobody", 1, timeout=5.0)
            return answers, every, None
        finally:
            serving.cancel()

    answers, every, _ = asyncio.run(asyncio.wait_for(main(), 30.0))
    assert answers == [n + 1 for n in range(8)]
    assert [answer.message for answer in every] == [101]


def test_a_pending_request_ends_with_closed_error_when_the_inbox_closes(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    from shellbot import _requests
    from shellbot._settings import BusSettings

    subscribers(bus, "never")
    bus.request_all("never", "warm up", timeout=0.05)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            bus.request("never", "q", timeout=30.0)
        except BaseException as error:
            outcome.append(error)

    asking = threading.Thread(target=ask)
    asking.start()
    requester = _requests.existing_requester(BusSettings.from_context(bus.context))
    assert requester is not None
    assert eventually(lambda: len(requester.pending) == 1)
    started = time.monotonic()
    requester.close()  # what the exit of the process does
    asking.join(5.0)
    assert time.monotonic() - started < 2.0
    assert len(outcome) == 1 and isinstance(outcome[0], ClosedError)
    with pytest.raises(ClosedError):
        requester.send("never", "again", 1.0, 1)
    _requests._requesters.clear()  # the next test's bus makes a new one


def test_a_request_can_be_answered_from_a_copy_of_it(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    import pickle

    responder = subscribers(bus, "handed.on")
    outcome: list[Any] = []
    asking = threading.Thread(
        target=lambda: outcome.append(bus.request("handed.on", "q", timeout=5.0))
    )
    asking.start()
    request = responder.receive(block=True, timeout=5.0)
    assert request is not None
    copy = pickle.loads(pickle.dumps(request))  # as a worker process would get it
    assert copy == request and copy.is_request
    copy.reply("from the copy")
    asking.join(5.0)
    assert outcome == ["from the copy"]


def test_a_request_to_a_group_goes_to_exactly_one_member(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    members = [bus.subscribe("jobs", group="pool") for _ in range(3)]
    try:
        for index, member in enumerate(members):
            assert member.wait_ready(timeout=5.0)
            _respond(member, lambda request, index=index: index)
        # Only the group subscribes: its members are responders, not "no one".
        assert bus.request("jobs", "first", timeout=5.0) in (0, 1, 2)
        watcher = subscribers(bus, "jobs")  # outside the group: sees every request
        answered = []
        for number in range(12):
            answers = bus.request_all("jobs", number, timeout=0.3)
            assert len(answers) == 1, answers  # one member took it, and only one
            answered.append(answers[0].message)
        seen = [watcher.receive(block=True, timeout=5.0) for _ in range(12)]
        assert [message.message for message in seen if message] == list(range(12))
        assert set(answered) <= {0, 1, 2}
    finally:
        for member in members:
            member.close()
