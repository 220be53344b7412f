"""The ballot box: pure logic, no bus."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .messages import Ballot, Closed, Question, Ready, Unreadable, parse, short_name
from .settings import LATE_GRACE


@dataclass
class Outcome:
    """What the host made of one message on a vote channel."""

    kind: str  # 'counted', 'rejected', 'late', 'deduplicated', 'ready' or 'ignored'
    voter: str
    option: str | None = None
    reason: str = ""
    at: float = 0.0  # seconds after the due time


@dataclass
class Tally:
    """The ballot box: who may vote, what was counted, rejected or late, and who was silent.

    A voter's ready message tells its sender (the publishing process): a ballot on
    that voter's channel from another sender is rejected, not taken for the voter's.
    """

    vote_id: str
    options: list[str]
    registered: dict[str, str] = field(default_factory=dict)  # channel -> 'local' or joiner
    ready: set[str] = field(default_factory=set)
    senders: dict[str, int] = field(default_factory=dict)  # channel -> sender of its ready
    heard: set[str] = field(default_factory=set)  # asked channels whose voter sent a ballot
    asked: list[str] = field(default_factory=list)
    ballots: dict[str, str] = field(default_factory=dict)
    rejected: list[Outcome] = field(default_factory=list)
    late: list[Outcome] = field(default_factory=list)
    due: float | None = None  # monotonic time of the question
    closed_at: float | None = None
    last_ballot: float | None = None
    # A durable vote: a voter whose process was started again says it is ready again,
    # from its new process, and may send the ballot it had sent already (same option).
    durable: bool = False
    deduplicated: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.options, 0)
        for option in self.ballots.values():
            counts[option] += 1
        return counts

    @property
    def winners(self) -> list[str]:
        counts = self.counts
        best = max(counts.values(), default=0)
        return [option for option, count in counts.items() if count == best and best > 0]

    @property
    def complete(self) -> bool:
        return bool(self.asked) and all(voter in self.ballots for voter in self.asked)

    def register(self, channels: Iterable[str], origin: str) -> None:
        for channel in channels:
            self.registered[channel] = origin

    @property
    def silent(self) -> list[str]:
        """The asked voters from whom no ballot came: every other one was counted, late
        or rejected."""
        return [channel for channel in self.asked if channel not in self.heard]

    def take(self, channel: str, body: Any, now: float, sender: int | None = None) -> Outcome:
        """Judges a message that arrived on ``channel`` at monotonic time ``now``, sent by
        ``sender`` (``Message.sender``; None when unknown)."""
        at = 0.0 if self.due is None else now - self.due
        voter = short_name(channel)
        message = parse(body)
        if isinstance(message, Question | Closed) or (
            isinstance(message, Unreadable) and message.kind in (Question.KIND, Closed.KIND)
        ):
            return Outcome("ignored", voter)  # the host's own broadcasts, seen on the way back
        if isinstance(message, Ready):
            if channel in self.registered and message.voter == channel:
                self.ready.add(channel)
                if sender is not None:
                    if self.durable:
                        self.senders[channel] = sender
                    else:
                        self.senders.setdefault(channel, sender)
                return Outcome("ready", voter)
            return Outcome("ignored", voter)
        if isinstance(message, Unreadable):
            return self._reject(voter, f"not a ballot: {message.what}", at)
        if not isinstance(message, Ballot):
            return self._reject(voter, f"not a ballot: kind {message.KIND!r}", at)
        return self._judge(channel, voter, message, now, at, sender)

    def _judge(
        self, channel: str, voter: str, ballot: Ballot, now: float, at: float, sender: int | None
    ) -> Outcome:
        claimed = ballot.voter
        if channel not in self.registered or claimed != channel:
            name = short_name(claimed) if isinstance(claimed, str) else voter
            return self._reject(name, "unknown voter", at)
        expected = self.senders.get(channel)
        if sender is not None and expected is not None and sender != expected:
            return self._reject(
                voter, f"sent by {sender:016x}, not by the voter's process ({expected:016x})", at
            )
        if self.due is not None and channel in self.asked:
            self.heard.add(channel)
        option = ballot.option
        if not isinstance(option, str) or option not in self.options:
            return self._reject(voter, f"invalid option {option!r}", at)
        if self.due is None or channel not in self.asked:
            return self._reject(voter, "not asked", at)
        if self.durable and self.ballots.get(channel) == option:
            outcome = Outcome("deduplicated", voter, option, "sent again: counted once", at)
            self.deduplicated.append(outcome)
            return outcome
        if channel in self.ballots or self.was_late(voter):
            return self._reject(voter, "duplicate: this voter's ballot came already", at)
        if self.closed_at is not None:
            outcome = Outcome("late", voter, option, f"{now - self.closed_at:.2f} s late", at)
            self.late.append(outcome)
            return outcome
        self.ballots[channel] = option
        self.last_ballot = now
        return Outcome("counted", voter, option, at=at)

    def was_late(self, voter: str) -> bool:
        """True when ``voter`` (a short name) sent a ballot after the close."""
        return any(outcome.voter == voter for outcome in self.late)

    def result(self, question: str, by_timeout: bool) -> Result:
        """What the vote says now: ``question`` was asked."""
        last = None
        if self.last_ballot is not None and self.due is not None:
            last = max(0.0, self.last_ballot - self.due)
        return Result(
            vote_id=self.vote_id,
            question=question,
            options=self.options,
            counts=self.counts,
            winners=self.winners,
            asked=len(self.asked),
            counted=len(self.ballots),
            registered=len(self.registered),
            by_timeout=by_timeout,
            last_ballot_after=last,
            rejected=list(self.rejected),
            late=list(self.late),
            not_ready=[short_name(c) for c in self.registered if c not in self.asked],
            silent=[short_name(channel) for channel in self.silent],
            deduplicated=len(self.deduplicated),
        )

    def _reject(self, voter: str, reason: str, at: float) -> Outcome:
        outcome = Outcome("rejected", voter, reason=reason, at=at)
        self.rejected.append(outcome)
        return outcome


@dataclass
class Result:
    """What a finished vote says."""

    vote_id: str
    question: str
    options: list[str]
    counts: dict[str, int]
    winners: list[str]
    asked: int
    counted: int
    registered: int
    by_timeout: bool
    last_ballot_after: float | None  # seconds from the question to the last counted ballot
    rejected: list[Outcome]
    late: list[Outcome]
    not_ready: list[str]
    silent: list[str] = field(default_factory=list)  # asked voters whose ballot never came
    grace: float = LATE_GRACE  # how long after the close late ballots were still taken
    deduplicated: int = 0  # ballots a voter sent again (a durable vote): counted once
    deduplicated_by_bus: int = 0  # ballots the network brought twice, dropped by the bus

    def to_message(self) -> Closed:
        return Closed(
            vote=self.vote_id,
            counts=self.counts,
            winners=self.winners,
            counted=self.counted,
            asked=self.asked,
            by_timeout=self.by_timeout,
        )
