"""The hub routes per subscriber: batches of many channels, on a protocol any ZeroMQ
program can speak, with routes that follow subscribers in and out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import zmq
from conftest import eventually

from shellbot._codec import HEADER, RECORD, ROUTE, ROUTE_REQUEST, topic_of
from shellbot.bus import Bus, Subscriber

pytestmark = pytest.mark.embedded_hub  # the hub of the bus, held by a publisher


def records(batch: bytes) -> Iterator[tuple[bytes, int, int, list[object]]]:
    """(topic, sender, first sequence, messages) of each record of a batch."""
    offset = 0
    while offset < len(batch):
        length, topic_length, count = RECORD.unpack_from(batch, offset)
        frame = batch[offset + RECORD.size : offset + RECORD.size + length]
        offset += RECORD.size + length
        topic, body = frame[:topic_length], frame[topic_length:]
        sender, sequence = HEADER.unpack_from(body)
        texts = body[HEADER.size :].split(b"\n")
        assert len(texts) == count
        yield topic, sender, sequence, [orjson.loads(text) for text in texts]


def test_a_batch_carries_many_channels_to_the_receiver_that_asked(
    tcp_bus: Bus, tcp_address: str, raw: zmq.Context
) -> None:
    """A program asks for channels as documented in _codec; messages queued before the
    hub starts arrive at once, so the hub batches them: fewer frames than messages."""
    receiver = b"0123456789abcdef"
    peer = raw.socket(zmq.SUB)
    peer.setsockopt(zmq.RECONNECT_IVL, 20)  # in before the hub's warm-up ends, as ours are
    peer.setsockopt(zmq.SUBSCRIBE, ROUTE + receiver)
    for channel in ("a", "b", "c"):
        peer.setsockopt(zmq.SUBSCRIBE, ROUTE_REQUEST + receiver + b":" + topic_of(channel))
    peer.connect(tcp_address)
    publisher = tcp_bus.publish()
    for index in range(300):
        publisher.put("abc"[index % 3], index)
    publisher.start()
    try:
        arrived: dict[bytes, list[object]] = {}
        frames = 0
        mixed = False
        while sum(len(messages) for messages in arrived.values()) < 300:
            assert peer.poll(5000), "the batches stopped before every message came"
            topic, batch = peer.recv_multipart()
            assert topic == ROUTE + receiver
            frames += 1
            channels = set()
            for channel, _sender, _sequence, messages in records(batch):
                arrived.setdefault(channel, []).extend(messages)
                channels.add(channel)
            mixed = mixed or len(channels) > 1
    finally:
        publisher.stop()
    assert arrived == {topic_of(c): list(range(i, 300, 3)) for i, c in enumerate("abc")}
    assert mixed and frames < 300


def test_routes_follow_subscribers_in_and_out(tcp_bus: Bus) -> None:
    hub = tcp_bus.publish()
    hub.start()
    try:
        channels = [f"direct-{index}" for index in range(1000)]
        subscriber = tcp_bus.subscribe(channels)
        patterned = tcp_bus.subscribe("votes.*", pattern=True)
        assert subscriber.wait_ready() and patterned.wait_ready()
        assert eventually(lambda: hub.stats["routes"] == 1001)
        assert hub.stats["subscribers"] == 2
        subscriber.unsubscribe(channels[:10])
        assert eventually(lambda: hub.stats["routes"] == 991)
        subscriber.close()  # gone without unsubscribing: the hub hears it from ZeroMQ
        assert eventually(lambda: hub.stats["routes"] == 1)
        assert hub.stats["subscribers"] == 1
        patterned.close()
        assert eventually(lambda: hub.stats["routes"] == 0)
        assert hub.stats["subscribers"] == 0  # live ones: none once everyone left
    finally:
        hub.stop()


def test_forwarded_counts_users_messages_and_signals_apart(tcp_bus: Bus) -> None:
    hub = tcp_bus.publish()
    hub.start()  # its readiness probe is a signal
    try:
        with tcp_bus.subscribe("news") as subscriber:
            assert subscriber.wait_ready()  # probes too
            hub.put("news", 1)
            assert subscriber.get(block=True, timeout=5.0) == 1
            hub.put("nobody", 2)  # no subscriber wants it
            assert eventually(lambda: hub.stats["unrouted"] == 1)
            stats = hub.stats
            assert stats["forwarded"] == 2
            assert stats["signals"] >= 2
    finally:
        hub.stop()
    assert hub.stats["forwarded"] == 2  # the stop pill is a signal too


def test_wait_ready_covers_every_channel_of_a_large_subscription(tcp_bus: Bus) -> None:
    """The probe's echo comes after the hub learnt the routes asked for before it."""
    hub = tcp_bus.publish()
    hub.start()
    try:
        for attempt in range(3):
            channels = [f"attempt-{attempt}-{index}" for index in range(5000)]
            with tcp_bus.subscribe(channels) as subscriber:
                assert subscriber.wait_ready()
                hub.put(channels[-1], "last")
                hub.put(channels[0], "first")
                assert subscriber.get(block=True, timeout=5.0) == "last"
                assert subscriber.get(block=True, timeout=5.0) == "first"
    finally:
        hub.stop()


@pytest.fixture
def fake_hub(tcp_address: str, raw: zmq.Context) -> Iterator[zmq.Socket]:
    """An XPUB socket where a hub would be, sending whatever a test makes up."""
    xpub = raw.socket(zmq.XPUB)
    xpub.bind(tcp_address)
    yield xpub
    xpub.close(linger=0)


def batch_topic_of(xpub: zmq.Socket) -> bytes:
    """The batch topic a subscriber subscribed to, read from its subscriptions."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if xpub.poll(100):
            event = xpub.recv()
            if event[1:].startswith(ROUTE):
                return event[1:]
    raise AssertionError("the subscriber never asked for its batches")


def record(topic: bytes, body: bytes, count: int = 1) -> bytes:
    return RECORD.pack(len(topic) + len(body), len(topic), count) + topic + body


def test_a_bad_batch_loses_only_what_cannot_be_read(tcp_address: str, fake_hub: zmq.Socket) -> None:
    subscriber = Subscriber(tcp_address, ["votes", "other"])
    try:
        batch_topic = batch_topic_of(fake_hub)
        votes = topic_of("votes")

        def good(sequence: int) -> bytes:
            return record(votes, HEADER.pack(5, sequence) + orjson.dumps({"n": sequence}))

        bad_batches = [
            good(1) + b"\x01\x02",  # a cut record header after a good record
            good(2) + RECORD.pack(9999, 5, 1) + b"votes",  # longer than what is left
            good(3) + record(votes, HEADER.pack(5, 4) + b"{not json"),
            good(5) + record(votes, b"short"),  # no room for the header
            good(6) + record(batch_topic, good(7)),  # a batch inside a batch: dropped
            good(7) + record(topic_of("unasked"), HEADER.pack(5, 1) + b"1"),
            good(8) + record(votes, HEADER.pack(5, 9) + b"9\n10", count=2),
        ]
        wanted = [{"n": n} for n in (1, 2, 3, 5, 6, 7, 8)] + [9, 10]
        # The subscription may reach the socket's filter a moment after the XPUB saw it:
        # the first batch is sent again until it arrives (its repeats are skipped below).
        deadline = time.monotonic() + 5.0
        first = None
        while first is None and time.monotonic() < deadline:
            fake_hub.send_multipart([batch_topic, bad_batches[0]])
            first = subscriber.get(block=True, timeout=0.1)
        received = [first]
        for batch in bad_batches[1:]:
            fake_hub.send_multipart([batch_topic, batch])
        while len(received) < len(wanted):
            message = subscriber.get(block=True, timeout=5.0)
            assert message is not None, f"only {received} arrived"
            if message != {"n": 1}:
                received.append(message)
        assert received == wanted
        stats = subscriber.stats
        # cut header, too long, not JSON, short body, and the bus signal (a batch topic)
        # inside a batch, which no hub sends
        assert stats["dropped"] == 5
        assert stats["missed"] == 0  # sequence 4 came, and was dropped: not missed
    finally:
        subscriber.close()


def test_gaps_are_counted_per_sender_on_a_shared_channel(
    tcp_address: str, fake_hub: zmq.Socket
) -> None:
    subscriber = Subscriber(tcp_address, "votes")
    try:
        batch_topic = batch_topic_of(fake_hub)
        votes = topic_of("votes")

        def message(sender: int, sequence: int) -> bytes:
            return record(votes, HEADER.pack(sender, sequence) + orjson.dumps([sender, sequence]))

        # Senders 1 and 2 interleave; 1 skips 3 and 4, 2 skips 2; 3 starts at 5 (its
        # first message seen: nothing is known before it).
        sent = [(1, 1), (2, 1), (1, 2), (1, 5), (2, 3), (3, 5), (2, 4), (1, 6)]
        first = None
        deadline = time.monotonic() + 5.0
        while first is None and time.monotonic() < deadline:  # until the filter is in
            fake_hub.send_multipart([batch_topic, message(9, 1)])
            first = subscriber.get(block=True, timeout=0.1)
        fake_hub.send_multipart([batch_topic, b"".join(message(*pair) for pair in sent[:5])])
        fake_hub.send_multipart([batch_topic, b"".join(message(*pair) for pair in sent[5:])])
        received = []
        while len(received) < len(sent):
            got = subscriber.get(block=True, timeout=5.0)
            assert got is not None, f"only {received} arrived"
            if got != [9, 1]:
                received.append(tuple(got))
        assert received == sent
        assert subscriber.stats["missed"] == 3
    finally:
        subscriber.close()
