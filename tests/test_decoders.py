"""Every decoder of the bus against any bytes (hypothesis): the subscriber's (two-frame
messages, runs, batches, bus signals) and the hub's (one-frame and two-frame messages,
over a real inproc socket). Any input gives messages or a counted drop, never another
exception; and every JSON value the bus accepts comes back equal."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shellbot import Context
from shellbot._codec import (
    BATCH_SEPARATOR,
    HEADER,
    PROBE,
    RECORD,
    ROUTE,
    encode,
    topic_of,
)
from shellbot._settings import BusSettings
from shellbot._transports import transport_for
from shellbot._transports.zmq.sockets import inbound_address
from shellbot.bus import Bus
from shellbot.errors import MessageError

_names = itertools.count()
SENDER = 42

# What the bus accepts: JSON values, None only inside containers, finite floats, and
# integers orjson writes (64 bits).
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
).filter(lambda value: value is not None)

channels = st.text(min_size=1, max_size=12)
# Frames near the real ones (a topic, maybe a header, maybe JSON) and plain noise.
topics = st.one_of(
    st.sampled_from([b"votes\xff", b"\xff", b"", b"votes", b"\xc3\x28\xff", b"a\xffb\xff"]),
    st.binary(max_size=24),
    channels.map(topic_of),
    st.builds(lambda name: PROBE + name, st.binary(max_size=8)),
)
bodies = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda sender, sequence, text: HEADER.pack(sender, sequence) + text,
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1),
        st.one_of(st.binary(max_size=40), json_values.map(orjson.dumps)),
    ),
)
frames_of_any_shape = st.one_of(
    st.lists(st.binary(max_size=48), max_size=4),
    st.tuples(topics, bodies).map(list),
)


def _address() -> str:
    return f"inproc://shellbot-decoders-{next(_names)}"


@pytest.fixture(scope="module")
def everything() -> Iterator[Any]:
    """A subscriber of every channel and of 'votes' (no hub is needed to decode)."""
    bus = Bus(Context({"bus": {"address": _address()}}))
    subscriber = bus.subscribe(["", "votes"])
    yield subscriber
    subscriber.close()


def _taken(subscriber: Any, frames: list[bytes]) -> tuple[int, int, list[Any]]:
    """(messages taken, drops counted, the messages' envelopes) for one input."""
    pending = subscriber._pending
    pending.clear()
    before = dict(subscriber.stats)
    taken = subscriber._decoder.take(frames)
    after = subscriber.stats
    assert len(pending) == taken == after["received"] - before["received"]
    envelopes = [subscriber.receive() for _ in range(taken)]
    return taken, after["dropped"] - before["dropped"], envelopes


def _batch(records: list[tuple[bytes, bytes, int]]) -> bytes:
    """A batch as the hub sends it: per record, its RECORD header then topic + body."""
    return b"".join(
        RECORD.pack(len(topic) + len(body), len(topic), count) + topic + body
        for topic, body, count in records
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=frames_of_any_shape)
def test_any_frames_give_messages_or_a_counted_drop(everything: Any, frames: list[bytes]) -> None:
    taken, dropped, envelopes = _taken(everything, frames)
    signal = (
        len(frames) == 2
        and frames[0][:1] == b"\xff"
        and frames[0] != everything._decoder.batch_topic
    )
    if not signal:  # bus signals of other parties are ignored, by design
        assert taken + dropped >= 1
    for envelope in envelopes:
        assert envelope.message is not None
        orjson.dumps(envelope.message)  # a JSON value, whole
        assert isinstance(envelope.channel, str)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.binary(max_size=200))
def test_any_batch_gives_messages_or_a_counted_drop(everything: Any, batch: bytes) -> None:
    taken, dropped, _ = _taken(everything, [everything._decoder.batch_topic, batch])
    assert taken + dropped >= 1


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(topics, bodies, st.integers(0, 3)),
        min_size=1,
        max_size=5,
    ),
    cut=st.integers(0, 40),
)
def test_a_batch_of_bad_or_cut_records_gives_messages_or_drops(
    everything: Any, records: list[tuple[bytes, bytes, int]], cut: int
) -> None:
    batch = _batch(records)
    batch = batch[: max(0, len(batch) - cut)] if cut < 20 else batch
    taken, dropped, _ = _taken(everything, [everything._decoder.batch_topic, batch])
    assert taken + dropped >= 1


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=64))
def test_a_probe_signal_never_gives_a_message(everything: Any, body: bytes) -> None:
    taken, dropped, _ = _taken(everything, [PROBE + b"someone-else", body])
    assert taken == dropped == 0
    taken, dropped, _ = _taken(everything, [everything._readiness.probe, body])
    assert taken == dropped == 0
    if len(body) >= HEADER.size:
        assert (
            everything._readiness.ready
        )  # our own probe's echo, whatever it holds past the header
    everything._renew_probe()


def _encoded(value: Any) -> bytes:
    try:
        return encode(value, 1 << 20)
    except (TypeError, MessageError):
        assume(False)  # not a value the bus accepts: put() refuses it before sending
        raise


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(json_values, min_size=1, max_size=4), channel=channels)
def test_every_accepted_json_value_round_trips_in_every_frame_kind(
    everything: Any, values: list[Any], channel: str
) -> None:
    texts = [_encoded(value) for value in values]
    topic = topic_of(channel)
    start = next(_names) * 10 + 1  # a fresh run of sequence numbers: no gap counted
    one_by_one = [
        [topic, HEADER.pack(SENDER, start + index) + text] for index, text in enumerate(texts)
    ]
    run = [topic, HEADER.pack(SENDER, start + 10_000_000) + BATCH_SEPARATOR.join(texts)]
    # Another sender's numbers, so the batch's messages are not gaps of the run's.
    batch = [
        everything._decoder.batch_topic,
        _batch([(topic, HEADER.pack(SENDER + 1, start + i) + t, 1) for i, t in enumerate(texts)]),
    ]
    got: list[Any] = []
    for frames in [*one_by_one, run, batch]:
        _, dropped, envelopes = _taken(everything, frames)
        assert dropped == 0
        got.append([envelope.message for envelope in envelopes])
        assert all(envelope.channel == channel for envelope in envelopes)
    expected = [orjson.loads(text) for text in texts]
    assert expected == values
    assert got == [[value] for value in values] + [values, values]


# -- the hub's decoder, over a real socket --------------------------------------------


class _InprocHub:
    """A hub in this process, a raw PUSH peer on its inbound side, and a subscriber."""

    def __init__(self) -> None:
        address = _address()
        context = Context({"bus": {"address": address, "max_message_size": 4096}})
        self.settings = BusSettings.from_context(context)
        self.hub = transport_for(self.settings).open_hub()
        assert self.hub is not None
        self.peer = zmq.Context.instance().socket(zmq.PUSH)
        self.peer.setsockopt(zmq.SNDTIMEO, 5000)
        self.peer.connect(inbound_address(self.settings))
        self.subscriber = Bus(context).subscribe(["", "votes"])
        assert self.subscriber.wait_ready(5.0)
        self.marks = itertools.count()

    def counted(self) -> int:
        stats = self.hub.stats()
        return stats["forwarded"] + stats["signals"] + stats["dropped"] + stats["oversized"]

    def through(self, messages: list[list[bytes]]) -> list[Any]:
        """Sends ``messages`` then a mark; returns what the subscriber got before the mark."""
        mark = next(self.marks)
        for frames in messages:
            self.peer.send_multipart(frames)
        self.peer.send_multipart([b"mark\xff", HEADER.pack(7, mark + 1) + b"%d" % mark])
        got: list[Any] = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            message = self.subscriber.receive(block=True, timeout=0.5)
            if message is None:
                continue
            if message.channel == "mark" and message.message == mark:
                return got
            got.append(message)
        raise AssertionError("the hub forwarded nothing more: it stopped or hangs")

    def close(self) -> None:
        self.peer.close(linger=0)
        self.subscriber.close()
        self.hub.close(0.0)


@pytest.fixture(scope="module")
def inproc_hub() -> Iterator[_InprocHub]:
    hub = _InprocHub()
    yield hub
    hub.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(frames_of_any_shape.filter(bool), min_size=1, max_size=6))
def test_the_hub_counts_every_inbound_message_and_keeps_forwarding(
    inproc_hub: _InprocHub, messages: list[list[bytes]]
) -> None:
    before = inproc_hub.counted()
    inproc_hub.through(messages)  # the mark came through: the hub still forwards
    frames = sum(len(message) for message in messages)
    # The hub's counters move once the burst is done: after the mark, bounded.
    deadline = time.monotonic() + 2.0
    while inproc_hub.counted() - before < len(messages) + 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    counted = inproc_hub.counted() - before - 1  # the mark
    assert len(messages) <= counted <= frames


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(json_values, min_size=1, max_size=20), channel=channels)
def test_every_accepted_json_value_round_trips_through_a_hub(
    inproc_hub: _InprocHub, values: list[Any], channel: str
) -> None:
    texts = [_encoded(value) for value in values]
    topic = topic_of(channel)
    base = next(_names) * 1000
    # One-frame form, as our publishers send, and two frames, as other programs do.
    messages = [
        [topic + HEADER.pack(SENDER, base + index + 1) + text]
        if index % 2
        else [topic, HEADER.pack(SENDER, base + index + 1) + text]
        for index, text in enumerate(texts)
    ]
    dropped = inproc_hub.subscriber.stats["dropped"]
    got = inproc_hub.through(messages)
    assert [message.message for message in got] == values
    assert {message.channel for message in got} == {channel}
    assert inproc_hub.subscriber.stats["dropped"] == dropped


def test_routes_signals_are_not_messages() -> None:
    """A batch topic of another receiver, sent as a signal, is no message to us."""
    bus = Bus(Context({"bus": {"address": _address()}}))
    with bus.subscribe("votes") as subscriber:
        taken, dropped, _ = _taken(subscriber, [ROUTE + b"someone", _batch([])])
        assert taken == dropped == 0
