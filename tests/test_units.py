"""Unit tests of the pieces the end-to-end suites cover only as a whole: the hub's
routes and their cache, its batches, a subscriber's gap counting, and patterns.

The batches go out on a real XPUB socket, read by a real SUB socket (inproc://).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import zmq
from test_routing import records

from shellbot._codec import BATCH_SEPARATOR, HEADER, ROUTE, ROUTE_REQUEST, topic_of
from shellbot._subscriptions import Topic, compile_pattern
from shellbot._transports.zmq.routing import ROUTE_CACHE_LIMIT, Batches, Routes

_names = itertools.count()


def route(receiver: bytes, prefix: bytes, subscribing: bool = True) -> bytes:
    """The (un)subscription an XPUB socket hands up for a receiver's route request."""
    return (b"\x01" if subscribing else b"\x00") + ROUTE_REQUEST + receiver + b":" + prefix


def frame(channel: str, sequence: int, text: bytes, sender: int = 7) -> bytes:
    """A message in the one-frame form: topic, then the body (header and JSON)."""
    return topic_of(channel) + HEADER.pack(sender, sequence) + text


# -- routes and their cache --------------------------------------------------------------


def test_routes_find_exact_topics_and_prefixes_and_count_them() -> None:
    routes = Routes()
    routes.take(route(b"r1", topic_of("news")))
    routes.take(route(b"r2", b"vote."))  # the literal start of a pattern
    routes.take(route(b"r2", b""))  # every channel
    assert routes.count == 3 and routes.held == {ROUTE + b"r1": 1, ROUTE + b"r2": 2}
    assert set(routes.receivers_of(topic_of("news"))) == {ROUTE + b"r1", ROUTE + b"r2"}
    assert routes.receivers_of(topic_of("vote.a")) == (ROUTE + b"r2",)
    # An exact topic matches itself alone, never a longer channel.
    assert routes.receivers_of(topic_of("newsroom")) == (ROUTE + b"r2",)


def test_the_route_cache_is_kept_until_the_routes_change() -> None:
    routes = Routes()
    routes.take(route(b"r1", topic_of("news")))
    found = routes.receivers_of(topic_of("news"))
    assert routes.cache == {topic_of("news"): found}
    routes.take(route(b"r2", topic_of("news")))
    assert routes.cache == {}  # a change empties it: the next look works the routes again
    assert set(routes.receivers_of(topic_of("news"))) == {ROUTE + b"r1", ROUTE + b"r2"}
    routes.take(route(b"r1", topic_of("news"), subscribing=False))
    routes.take(route(b"r2", topic_of("news"), subscribing=False))
    assert routes.receivers_of(topic_of("news")) == ()
    assert routes.count == 0 and routes.held == {} and routes.exact == {}


def test_the_route_cache_is_bounded() -> None:
    routes = Routes()
    routes.take(route(b"r1", b""))
    for index in range(ROUTE_CACHE_LIMIT):
        routes.cache[topic_of(f"c{index}")] = ()
    routes.receivers_of(topic_of("one more"))
    assert routes.cache == {topic_of("one more"): (ROUTE + b"r1",)}


def test_routes_ignore_what_is_not_a_route_and_count_plain_readers() -> None:
    routes = Routes()
    for event in (b"", b"\x02junk", route(b"", b"x"), b"\x01" + ROUTE_REQUEST + b"no-colon"):
        routes.take(event)
    assert routes.count == 0 and routes.exact == {} and routes.prefixes == {}
    routes.take(b"\x01" + topic_of("plain"))  # another program's SUB socket
    assert routes.plain == 1
    routes.take(b"\x00" + topic_of("plain"))
    routes.take(b"\x00" + topic_of("plain"))  # never below none
    assert routes.plain == 0


def test_the_same_route_twice_is_held_once() -> None:
    routes = Routes()
    routes.take(route(b"r1", topic_of("news")))
    routes.take(route(b"r1", topic_of("news")))
    assert routes.count == 1
    routes.take(route(b"r9", topic_of("news"), subscribing=False))  # not held: nothing moves
    assert routes.count == 1


# -- batches ------------------------------------------------------------------------------


@pytest.fixture
def xpub_and_reader(raw: zmq.Context) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    address = f"inproc://units-{next(_names)}"
    xpub = raw.socket(zmq.XPUB)
    xpub.bind(address)
    reader = raw.socket(zmq.SUB)
    reader.connect(address)
    reader.setsockopt(zmq.SUBSCRIBE, b"")
    assert xpub.poll(5000), "the reader's subscription did not reach the XPUB socket"
    xpub.recv()
    yield xpub, reader
    reader.close(linger=0)
    xpub.close(linger=0)


def sent(reader: zmq.Socket) -> list[list[bytes]]:
    """Every message the batches sent, as frames, once they have been flushed."""
    messages = []
    while reader.poll(100):
        messages.append(reader.recv_multipart())
    return messages


def test_batches_hold_a_record_per_run_and_go_to_each_receiver(
    xpub_and_reader: tuple[zmq.Socket, zmq.Socket],
) -> None:
    xpub, reader = xpub_and_reader
    routes = Routes()
    routes.take(route(b"r1", topic_of("news")))
    routes.take(route(b"r2", b""))
    batches = Batches(xpub, routes, limit=32 * 1024)
    batches.add(topic_of("news"), [frame("news", 1, b'"a"'), b'"b"', b'"c"'])
    batches.add(topic_of("other"), [frame("other", 5, b"1")])
    assert sent(reader) == []  # nothing leaves before the flush
    batches.flush()
    by_receiver = {topic: batch for topic, batch in sent(reader)}
    assert set(by_receiver) == {ROUTE + b"r1", ROUTE + b"r2"}
    assert list(records(by_receiver[ROUTE + b"r1"])) == [(topic_of("news"), 7, 1, ["a", "b", "c"])]
    assert list(records(by_receiver[ROUTE + b"r2"])) == [
        (topic_of("news"), 7, 1, ["a", "b", "c"]),
        (topic_of("other"), 7, 5, [1]),
    ]
    assert batches.unrouted == 0


def test_a_batch_full_to_its_limit_leaves_before_the_next_record(
    xpub_and_reader: tuple[zmq.Socket, zmq.Socket],
) -> None:
    xpub, reader = xpub_and_reader
    routes = Routes()
    routes.take(route(b"r1", b""))
    batches = Batches(xpub, routes, limit=200)
    text = b'"' + b"x" * 60 + b'"'
    for sequence in range(1, 6):
        batches.add(topic_of("c"), [frame("c", sequence, text)])
    batches.flush()
    messages = sent(reader)
    assert len(messages) > 1 and all(len(batch) <= 200 for _, batch in messages)
    sequences = [first for _, batch in messages for _, _, first, _ in records(batch)]
    assert sequences == [1, 2, 3, 4, 5]  # every record once, in order


def test_what_no_receiver_wants_is_counted_unrouted(
    xpub_and_reader: tuple[zmq.Socket, zmq.Socket],
) -> None:
    xpub, reader = xpub_and_reader
    batches = Batches(xpub, Routes(), limit=32 * 1024)
    batches.add(topic_of("nobody"), [frame("nobody", 1, b"1"), b"2"])
    batches.flush()
    assert batches.unrouted == 2 and sent(reader) == []


def test_plain_readers_get_plain_frames_and_nothing_counts_unrouted(
    xpub_and_reader: tuple[zmq.Socket, zmq.Socket],
) -> None:
    xpub, reader = xpub_and_reader
    routes = Routes()
    routes.take(b"\x01" + topic_of("plain"))
    batches = Batches(xpub, routes, limit=32 * 1024)
    batches.add(topic_of("plain"), [frame("plain", 3, b"1"), b"2"])
    batches.flush()
    body = BATCH_SEPARATOR.join([HEADER.pack(7, 3) + b"1", b"2"])
    assert sent(reader) == [[topic_of("plain"), body]]
    assert batches.unrouted == 0  # ZeroMQ, not the hub, knows whether a reader wanted it


# -- gaps in a sender's sequence ----------------------------------------------------------


def test_gaps_are_counted_per_sender() -> None:
    topic = Topic()
    assert topic.missed(sender=1, first=1, last=1) == 0  # a sender's first message: no gap
    assert topic.missed(1, 2, 4) == 0  # a run of three, in order
    assert topic.missed(1, 8, 8) == 3  # 5, 6 and 7 never came
    assert topic.missed(2, 10, 10) == 0  # another sender, first seen late: not a gap
    assert topic.missed(1, 9, 9) == 0  # the first sender again, where it left off
    assert topic.missed(2, 13, 14) == 2  # 11 and 12 of the second sender
    assert topic.missed(3, 1, 1) == 0
    assert topic.missed(2, 15, 15) == 0


def test_a_sender_going_back_is_no_gap() -> None:
    topic = Topic()
    topic.missed(1, 10, 10)
    assert topic.missed(1, 3, 3) == 0  # a restarted sender counts from 1 again
    assert topic.missed(1, 5, 5) == 1


# -- patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "prefix", "matching", "not_matching"),
    [
        ("votes.*", b"votes.", ["votes.a", "votes.bob"], ["votes", "votes.a.b", "votesx.a"]),
        ("votes.>", b"votes.", ["votes.a", "votes.a.b"], ["votes", "other.a"]),
        ("a.*.c", b"a.", ["a.b.c", "a.x.c"], ["a.b.d", "a.c", "a.b.c.d"]),
        ("*.c", b"", ["b.c", "x.c"], ["c", "a.b.c"]),
        (">", b"", ["a", "a.b"], [""]),
        ("a.b.*", b"a.b.", ["a.b.c"], ["a.b", "a.bc.d"]),
        ("v+1.*", b"v+1.", ["v+1.x"], ["vv1.x"]),  # the literal tokens are escaped
    ],
)
def test_a_pattern_compiles_to_its_literal_start_and_a_matcher(
    pattern: str, prefix: bytes, matching: list[str], not_matching: list[str]
) -> None:
    literal, matcher = compile_pattern(pattern)
    assert literal == prefix
    assert all(matcher.fullmatch(channel) for channel in matching)
    assert not any(matcher.fullmatch(channel) for channel in not_matching)


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("votes.>.x", "'>' must be the last token"),
        ("votes.a*", "'*' or '>' stand alone"),
        ("votes..*", "separated by single dots"),
        (".*", "separated by single dots"),
    ],
)
def test_a_bad_pattern_says_what_is_wrong(pattern: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("*", r"\*")):
        compile_pattern(pattern)


def test_a_durable_subscribers_record_of_a_sender_takes_a_late_earlier_message_once() -> None:
    from shellbot._durable import Seen

    seen = Seen(5)  # the first it takes of this sender: number 5
    assert seen.record(5) == 0
    assert seen.record(6) == 0
    assert seen.record(3) == 0  # stored late (its run was sent again): handed, no gap
    assert seen.record(3) is None  # and known again
    assert seen.record(5) is None and seen.record(6) is None
    assert seen.record(8) == 1  # 7 is missing
    assert seen.record(7) == -1  # and came
    assert seen.record(7) is None
