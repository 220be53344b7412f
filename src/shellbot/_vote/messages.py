"""The vote's channels and messages: each kind of message is built and read here alone.

On the bus a message of the vote is a JSON object whose ``kind`` says what it
is. ``to_body()`` makes that object, ``parse(body)`` reads any of them back, or
says why it is not one (``Unreadable``). What comes from a voter (``Ready``,
``Ballot``) is read as it was sent, odd values kept: the tally judges them and
says what was wrong. What the host and a joiner send each other is read
strictly: a message missing a field is ``Unreadable``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

JOIN_CHANNEL = "shellbot.vote.join"


def voter_channel(vote_id: str, number: int) -> str:
    return f"vote.{vote_id}.voter-{number:02d}"


def voter_number(channel: str) -> int:
    return int(channel.rsplit("-", 1)[1])


def short_name(channel: str) -> str:
    """``voter-07`` for ``vote.<id>.voter-07``: what people read."""
    return channel.rsplit(".", 1)[-1]


def reply_channel(token: str) -> str:
    """Where the host answers the joiner that sent ``token``."""
    return f"{JOIN_CHANNEL}.{token}"


def is_reply_channel(channel: str) -> bool:
    return channel.startswith(JOIN_CHANNEL + ".")


class _Message:
    """A kind of the vote's messages: its fields, in order, are the body's keys."""

    KIND: ClassVar[str]
    WIRE_NAMES: ClassVar[dict[str, str]] = {}  # field -> key, where they differ

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.KIND}
        for each in fields(self):  # type: ignore[arg-type]
            body[self.WIRE_NAMES.get(each.name, each.name)] = getattr(self, each.name)
        return body


@dataclass(frozen=True)
class Ready(_Message):
    """A voter's, on its own channel: its subscription is live."""

    KIND: ClassVar[str] = "ready"
    vote: str
    voter: object  # the channel it claims, judged by the tally

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Ready:
        return cls(vote=str(body.get("vote", "")), voter=body.get("voter"))


@dataclass(frozen=True)
class Question(_Message):
    """The host's, to every voter's channel at once (pattern 1)."""

    KIND: ClassVar[str] = "question"
    vote: str
    question: str
    options: list[str]
    due: float  # wall clock: when every voter starts thinking
    timeout: float  # seconds from ``due`` to the closing
    think: float  # the longest think time
    seed: int

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Question:
        return cls(
            vote=str(body["vote"]),
            question=str(body["question"]),
            options=[str(option) for option in body["options"]],
            due=float(body["due"]),
            timeout=float(body["timeout"]),
            think=float(body["think"]),
            seed=int(body["seed"]),
        )


@dataclass(frozen=True)
class Ballot(_Message):
    """A voter's, on its own channel (pattern 2)."""

    KIND: ClassVar[str] = "ballot"
    vote: str
    voter: object  # the channel it claims, judged by the tally
    option: object  # judged by the tally too
    think: float = 0.0  # how long the voter thought, for people to read

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Ballot:
        think = body.get("think", 0.0)
        return cls(
            vote=str(body.get("vote", "")),
            voter=body.get("voter"),
            option=body.get("option"),
            think=float(think) if isinstance(think, int | float) else 0.0,
        )


@dataclass(frozen=True)
class Closed(_Message):
    """The host's, to every voter's channel: the vote is over, and its result."""

    KIND: ClassVar[str] = "closed"
    vote: str
    counts: dict[str, int]
    winners: list[str]
    counted: int
    asked: int
    by_timeout: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Closed:
        return cls(
            vote=str(body["vote"]),
            counts={str(option): int(count) for option, count in body["counts"].items()},
            winners=[str(winner) for winner in body["winners"]],
            counted=int(body["counted"]),
            asked=int(body["asked"]),
            by_timeout=bool(body["by_timeout"]),
        )


@dataclass(frozen=True)
class JoinRequest(_Message):
    """A joiner's, on the join channel, repeated until the host answers."""

    KIND: ClassVar[str] = "join"
    WIRE_NAMES: ClassVar[dict[str, str]] = {"origin": "from"}
    token: str  # names the joiner's reply channel
    voters: object  # how many voters it brings, judged by the host
    origin: str  # who asks, for people to read

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JoinRequest:
        token = body["token"]
        if not isinstance(token, str):
            raise TypeError("the token is a string")
        return cls(token=token, voters=body.get("voters"), origin=str(body.get("from") or token))


@dataclass(frozen=True)
class Welcome(_Message):
    """The host's answer to a join it took: the voters' channels and the vote."""

    KIND: ClassVar[str] = "welcome"
    vote: str
    voters: list[str]
    question: str
    options: list[str]
    ask_by: float  # wall clock: the question comes by then, or never
    timeout: float

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Welcome:
        return cls(
            vote=str(body["vote"]),
            voters=[str(channel) for channel in body["voters"]],
            question=str(body["question"]),
            options=[str(option) for option in body["options"]],
            ask_by=float(body["ask_by"]),
            timeout=float(body["timeout"]),
        )


@dataclass(frozen=True)
class Refused(_Message):
    """The host's answer to a join it did not take."""

    KIND: ClassVar[str] = "refused"
    reason: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Refused:
        return cls(reason=str(body.get("reason")))


VoteMessage = Ready | Question | Ballot | Closed | JoinRequest | Welcome | Refused

_BY_KIND: dict[str, type[VoteMessage]] = {
    kind.KIND: kind for kind in (Ready, Question, Ballot, Closed, JoinRequest, Welcome, Refused)
}


@dataclass(frozen=True)
class Unreadable:
    """What arrived instead of a message of the vote, and why it is not one."""

    what: str  # "a JSON object is expected", "kind 'x'", ...
    kind: object = None  # the kind it claimed, if any
    body: object = field(default=None, repr=False)


def parse(body: object) -> VoteMessage | Unreadable:
    """The vote's message in ``body`` (a message's JSON value), or why it is none."""
    if not isinstance(body, dict):
        return Unreadable("a JSON object is expected", body=body)
    kind = body.get("kind")
    message_type = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if message_type is None:
        return Unreadable(f"kind {kind!r}", kind, body)
    try:
        return message_type.from_body(body)
    except (KeyError, TypeError, ValueError, AttributeError):
        return Unreadable(f"kind {kind!r}, missing or malformed fields", kind, body)
