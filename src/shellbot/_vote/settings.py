"""What a vote is asked to be, and the times and bounds it keeps.

Light on purpose: the command line reads its defaults here at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ShellbotError

DEFAULT_QUESTION = "Where shall we have lunch?"
DEFAULT_OPTIONS = ("pizza", "sushi", "salad", "tacos")
MAX_VOTERS = 1000  # hosted by one vote, or added by one join
MAX_WORKERS = 64
EXPECT_WAIT = 60.0  # how long a host expecting joiners waits for them, unless told
JOIN_WAIT = 10.0  # how long a joiner waits for a vote to take its voters, unless told

READY_TIMEOUT = 20.0  # how long voters may take to be ready (process start, subscription live)
JOIN_READY_TIMEOUT = 10.0  # how long joined voters may take to be ready once welcomed
DUE_LEAD = 0.2  # the question is sent this long before its due time
LATE_GRACE = 1.0  # how long the host listens for late ballots after closing
STORE_TIMEOUT = 10.0  # how long a durable voter waits for its ballot to be stored
CLOSE_SLACK = 5.0  # how long past the closing time a voter waits for the result
JOIN_RETRY = 0.5  # how often a joiner repeats its request until the host answers
TICK = 0.1  # how often a waiting host refreshes its view


class VoteError(ShellbotError):
    """The vote could not run: no voter got ready, the host refused a join, and so on."""


@dataclass
class VoteSettings:
    """One vote: where it runs, what it asks, and how its voters behave."""

    address: str
    question: str = DEFAULT_QUESTION
    options: list[str] = field(default_factory=lambda: list(DEFAULT_OPTIONS))
    voters: int = 20
    workers: int = 4
    think: float = 2.0
    timeout: float = 30.0
    wait: float = 0.0
    expect: int = 0
    seed: int | None = None
    curve: dict[str, str] = field(default_factory=dict)  # bus.curve.* keys, set ones only
    nats: dict[str, str] = field(default_factory=dict)  # bus.nats.* (credentials, TLS files)
    # On NATS JetStream: ballots and questions are stored, voters and the host subscribe
    # durably, and a worker process that dies is started again and goes on where it was.
    durable: bool = False

    def __post_init__(self) -> None:
        if len(set(self.options)) < 2:
            raise ValueError("a vote needs at least two different options")
