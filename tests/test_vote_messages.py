"""The vote's messages: each kind is built and read back in one place, its wire shape kept."""

from __future__ import annotations

import pytest

from shellbot._vote.messages import (
    Ballot,
    Closed,
    JoinRequest,
    Question,
    Ready,
    Refused,
    Unreadable,
    Welcome,
    parse,
)

EVERY_KIND = [
    Ready("v1", "vote.v1.voter-01"),
    Question("v1", "Lunch?", ["pizza", "sushi"], 1700000000.5, 30.0, 2.0, 7),
    Ballot("v1", "vote.v1.voter-01", "pizza", 0.42),
    Closed("v1", {"pizza": 1, "sushi": 0}, ["pizza"], 1, 1, False),
    JoinRequest("t0ken", 5, "host:123"),
    Welcome("v1", ["vote.v1.voter-21"], "Lunch?", ["pizza", "sushi"], 1700000030.0, 30.0),
    Refused("the question is already out"),
]


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda message: message.KIND)
def test_every_kind_reads_back_as_it_was_built(message: object) -> None:
    assert parse(message.to_body()) == message  # type: ignore[attr-defined]


def test_the_bodies_keep_the_keys_and_their_order_on_the_wire() -> None:
    assert list(JoinRequest("t", 2, "me").to_body()) == ["kind", "token", "voters", "from"]
    assert list(Ballot("v", "c", "o", 0.1).to_body()) == [
        "kind",
        "vote",
        "voter",
        "option",
        "think",
    ]
    assert Ready("v", "c").to_body() == {"kind": "ready", "vote": "v", "voter": "c"}


def test_what_is_not_a_message_of_the_vote_says_why() -> None:
    assert parse([1, 2]) == Unreadable("a JSON object is expected", body=[1, 2])
    unknown = parse({"kind": "hello"})
    assert isinstance(unknown, Unreadable) and unknown.what == "kind 'hello'"
    short = parse({"kind": "question", "vote": "v1"})
    assert isinstance(short, Unreadable) and short.kind == "question"
    assert isinstance(parse({"kind": "join", "token": 3}), Unreadable)


def test_what_a_voter_sent_is_kept_as_it_came_for_the_tally_to_judge() -> None:
    odd = parse({"kind": "ballot", "voter": 12, "option": ["x"]})
    assert odd == Ballot("", 12, ["x"], 0.0)
