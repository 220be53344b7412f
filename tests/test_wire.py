"""Bad input on the wire: foreign ZeroMQ peers cannot crash, block or corrupt the bus."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import zmq
from conftest import eventually, inbound_of, running_publisher

from shellbot import Context
from shellbot._codec import HEADER
from shellbot.bus import Bus, Publisher

pytestmark = pytest.mark.embedded_hub  # the hub of the bus, held by a publisher

MAX_SIZE = 4096


@pytest.fixture
def wire_bus(tcp_address: str) -> Bus:
    return Bus(Context({"bus": {"address": tcp_address, "max_message_size": MAX_SIZE}}))


@pytest.fixture
def hub(wire_bus: Bus) -> Iterator[Publisher]:
    yield from running_publisher(wire_bus)


def body(text: bytes, sequence: int = 1, sender: int = 99) -> bytes:
    return HEADER.pack(sender, sequence) + text


def test_garbage_to_the_inbound_side_is_dropped_and_counted(
    wire_bus: Bus, hub: Publisher, raw: zmq.Context
) -> None:
    address = wire_bus.context.get("bus.address")
    exact = wire_bus.subscribe("votes")
    everything = wire_bus.subscribe("")
    assert exact.wait_ready() and everything.wait_ready()
    peer = raw.socket(zmq.PUSH)
    peer.connect(inbound_of(address))

    good = 0

    def send_good() -> None:
        nonlocal good
        good += 1
        peer.send_multipart([b"votes\xff", body(orjson.dumps({"good": good}), good, sender=7)])

    hub_drops = [
        [b"only one frame"],
        [b"votes\xff", body(b"1"), b"a third frame"],
        [b"votes", body(b"1")],  # no terminator
        [b"", body(b"1")],
        [b"votes\xff", b"short"],  # no room for the header
        [b"votes\xff", body(b"x" * (MAX_SIZE + 1))],  # over bus.max_message_size
    ]
    subscriber_drops = [
        [b"votes\xff", body(b"{not json")],
        [b"\xc3\x28\xff", body(b"1")],  # a channel that is not UTF-8: only '' sees it
    ]
    send_good()
    for frames in hub_drops + subscriber_drops:
        peer.send_multipart(frames)
        send_good()
    hub.put("votes", {"good": "from the bus"})

    # Order holds per sender; the two senders interleave as they arrive.
    from_peer = [{"good": index} for index in range(1, good + 1)]
    for subscriber in (exact, everything):
        received = [subscriber.get(block=True, timeout=5.0) for _ in range(good + 1)]
        assert {"good": "from the bus"} in received
        received.remove({"good": "from the bus"})
        assert received == from_peer
    # The bad bodies came from another sender id, which the hub may forward later.
    assert eventually(lambda: exact.get() is None and exact.stats["dropped"] == 1)
    assert eventually(lambda: everything.get() is None and everything.stats["dropped"] == 2)
    assert exact.stats["dropped"] == 1  # the JSON; the bad channel never matched 'votes'
    assert exact.stats["missed"] == 0
    assert eventually(lambda: hub.stats["dropped"] == 5 and hub.stats["oversized"] == 1)
    peer.close(linger=0)


def test_a_huge_frame_drops_only_its_sender(
    wire_bus: Bus, hub: Publisher, raw: zmq.Context
) -> None:
    address = wire_bus.context.get("bus.address")
    subscriber = wire_bus.subscribe("votes")
    assert subscriber.wait_ready()
    peer = raw.socket(zmq.PUSH)
    peer.connect(inbound_of(address))
    peer.send_multipart([b"votes\xff", body(b"x" * (16 * MAX_SIZE + 70_000))])
    hub.put("votes", "still flowing")
    assert subscriber.get(block=True, timeout=5.0) == "still flowing"
    peer.close(linger=0)


def test_garbage_on_the_subscriber_side_is_ignored(
    wire_bus: Bus, hub: Publisher, raw: zmq.Context
) -> None:
    address = wire_bus.context.get("bus.address")
    peer = raw.socket(zmq.XSUB)
    peer.connect(address)
    peer.send(b"\x05 not a subscription")
    peer.send_multipart([b"\x01votes\xff", b"extra frame"])
    peer.send(b"")
    subscriber = wire_bus.subscribe("votes")
    assert subscriber.wait_ready()
    hub.put("votes", "fine")
    assert subscriber.get(block=True, timeout=5.0) == "fine"
    peer.close(linger=0)


def test_a_raw_subscriber_sees_the_documented_frames(
    wire_bus: Bus, hub: Publisher, raw: zmq.Context
) -> None:
    """The wire format is plain enough for any ZeroMQ program to read."""
    address = wire_bus.context.get("bus.address")
    peer = raw.socket(zmq.SUB)
    peer.setsockopt(zmq.SUBSCRIBE, b"votes\xff")
    peer.connect(address)
    subscriber = wire_bus.subscribe("votes")  # a handshake that the hub is up and forwarding
    assert subscriber.wait_ready()
    deadline = time.monotonic() + 5.0
    frames = None
    while frames is None and time.monotonic() < deadline:
        hub.put("votes", {"n": 1})
        if peer.poll(100):
            frames = peer.recv_multipart()
    assert frames is not None
    topic, payload = frames
    assert topic == b"votes\xff"
    _sender, sequence = HEADER.unpack_from(payload)
    assert sequence >= 1
    assert orjson.loads(payload[HEADER.size :]) == {"n": 1}
    peer.close(linger=0)


def test_a_taken_inbound_port_is_reported_by_start(tcp_address: str) -> None:
    import socket

    from shellbot.errors import TransportError

    _, port = tcp_address.rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(port) + 1))
        squatter.listen()
        publisher = Bus(Context({"bus": {"address": tcp_address}})).publish()
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"bus\.inbound") as raised:
            publisher.start()
        assert time.monotonic() - started < 5.0
        assert str(int(port) + 1) in str(raised.value)


def test_an_address_held_by_something_else_times_out_start(tcp_address: str) -> None:
    import socket

    from shellbot.errors import ShellbotError

    _, port = tcp_address.rsplit(":", 1)
    with socket.socket() as squatter:  # not a hub: it never answers a probe
        squatter.bind(("127.0.0.1", int(port)))
        squatter.listen()
        context = Context({"bus": {"address": tcp_address, "start_timeout": 0.5}})
        publisher = Bus(context).publish()
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"bus\.start_timeout") as raised:
            publisher.start()
        assert time.monotonic() - started < 3.0
        assert isinstance(raised.value, ShellbotError)
        publisher.join(2.0)
        assert not publisher.is_alive()


def test_a_flood_of_bad_frames_leaves_good_traffic_whole_and_the_hub_small(
    wire_bus: Bus, hub: Publisher, raw: zmq.Context
) -> None:
    """100,000 bad frames from a raw peer while a publisher sends 10,000: every good one
    arrives, every bad one is counted, and the hub's process does not grow with them."""
    import threading

    import psutil

    address = wire_bus.context.get("bus.address")
    subscriber = wire_bus.subscribe("votes")
    assert subscriber.wait_ready()
    hub_process = psutil.Process(hub.pid)
    rss_before = hub_process.memory_info().rss
    bad, good = 100_000, 10_000
    kinds = [b"garbage", b"votes\xff", b"votes\xffshort", b"\xff", b"", b"\xc3\x28"]
    peer = raw.socket(zmq.PUSH)
    peer.setsockopt(zmq.SNDTIMEO, 30_000)
    peer.connect(inbound_of(address))

    def flood() -> None:
        for index in range(bad):
            peer.send(kinds[index % len(kinds)])

    flooder = threading.Thread(target=flood)
    flooder.start()
    publisher = wire_bus.publish()
    for number in range(good):
        publisher.put("votes", number)
    received = []
    deadline = time.monotonic() + 60.0
    while len(received) < good and time.monotonic() < deadline:
        message = subscriber.get(block=True, timeout=1.0)
        if message is not None:
            received.append(message)
    flooder.join(60.0)
    assert received == list(range(good))
    assert subscriber.stats["missed"] == 0
    assert eventually(lambda: hub.stats["dropped"] == bad, timeout=30.0), hub.stats
    growth = hub_process.memory_info().rss - rss_before
    assert growth < 32 * 1024 * 1024, f"the hub grew by {growth / 2**20:.1f} MiB"
    peer.close(linger=0)
