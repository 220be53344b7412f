"""The one rule by which every transport joins runs (``_transports/_runs.py``): pure."""

from __future__ import annotations

from shellbot._codec import BATCH_SEPARATOR, HEADER, HEADER_SIZE
from shellbot._transports._runs import RUN_BYTES, Run, joined, run_limit


def body(sequence: int, text: bytes, sender: int = 7) -> bytes:
    return HEADER.pack(sender, sequence) + text


def test_a_run_takes_the_next_message_of_its_topic_alone() -> None:
    first = body(4, b'"a"')
    run = Run(b"news\xff", first, 4, len(first))
    limit = run_limit(1024 * 1024)
    assert run.takes(b"news\xff", 5, len(body(5, b'"b"')), limit)
    assert not run.takes(b"news\xff", 6, len(body(6, b'"b"')), limit)  # a gap
    assert not run.takes(b"news\xff", 4, len(body(4, b'"b"')), limit)  # again, or restarted
    assert not run.takes(b"other\xff", 5, len(body(5, b'"b"')), limit)
    run.add(b'"b"')
    assert run.next == 6 and run.count == 2
    assert run.joined() == first + BATCH_SEPARATOR + b'"b"'


def test_a_joined_body_holds_at_most_the_limit() -> None:
    text = b'"' + b"x" * 98 + b'"'  # 100 bytes of JSON
    limit = run_limit(1024 * 1024)
    first = body(1, text)
    run = Run(b"c\xff", first, 1, len(first))
    sequence = 1
    while run.takes(b"c\xff", sequence + 1, HEADER_SIZE + len(text), limit):
        sequence += 1
        run.add(text)
    assert len(run.joined()) == run.size <= limit
    assert len(run.joined()) + len(text) + 1 > limit  # one more would not have fitted
    assert limit == HEADER_SIZE + RUN_BYTES


def test_a_small_max_message_size_bounds_runs() -> None:
    assert run_limit(100) == HEADER_SIZE + 100
    first = body(1, b"1" * 60)
    run = Run(b"c\xff", first, 1, len(first))
    assert not run.takes(b"c\xff", 2, HEADER_SIZE + 60, run_limit(100))


def test_one_message_is_its_own_body() -> None:
    only = b"c\xff" + body(1, b"1")
    assert joined([only]) is only
