"""The distributed vote of the spec: both bus patterns at work, without any rendering.

The host is the group channel. Its voters are direct channels, named
``vote.<id>.voter-NN``, each served by a thread in one of a few worker
processes (threads of the host itself on process-local transports):

1. every voter subscribes to its own channel, confirms the subscription live
   (``wait_ready``) and says ``ready`` on it;
2. the host, once every voter is ready, broadcasts the question to the list
   of direct channels in one ``put()`` (pattern 1), with a due time a little
   ahead, so that every voter starts thinking at the same moment;
3. each voter thinks for a random time, then publishes its ballot on its own
   channel (pattern 2); the host subscribes to every channel of the vote
   (``vote.<id>.*``) and tallies ballots as they arrive;
4. when every voter has voted, or ``timeout`` seconds after the due time, the
   host closes the vote and broadcasts the result to every direct channel. It
   listens ``LATE_GRACE`` seconds more for late ballots, which it reports
   without counting them.

Joining from another terminal or host, over the bus only::

    joiner                                  host (waiting for joiners)
    subscribe shellbot.vote.join.<token>
    put shellbot.vote.join  {join, token, voters: 5}     (repeated until answered)
                                            registers voter-21..voter-25
    <- shellbot.vote.join.<token> {welcome, vote, voters: [...], ask_by}
    starts 5 voters; each says ready on its channel  ->  host asks once they are ready

A host refuses joins once the question is out. Every choice a voter makes
comes from ``random.Random`` seeded with the vote's seed and the voter's
number, so a run with the same ``--seed`` and voters gives the same result.

Nothing here prints: the host reports to a ``HostView`` and the joiner to a
``JoinView``; the command line renders them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._settings import BusSettings, redacted
from ._transports import transport_for
from ._transports.base import HubKind
from .bus import Bus, Message, Publisher, Subscriber
from .context import Context
from .errors import ShellbotError

JOIN_CHANNEL = "shellbot.vote.join"
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
CLOSE_SLACK = 5.0  # how long past the closing time a voter waits for the result
JOIN_RETRY = 0.5  # how often a joiner repeats its request until the host answers
TICK = 0.1  # how often a waiting host refreshes its view


class VoteError(ShellbotError):
    """The vote could not run: no voter got ready, the host refused a join, and so on."""


def voter_channel(vote_id: str, number: int) -> str:
    return f"vote.{vote_id}.voter-{number:02d}"


def voter_number(channel: str) -> int:
    return int(channel.rsplit("-", 1)[1])


def short_name(channel: str) -> str:
    """``voter-07`` for ``vote.<id>.voter-07``: what people read."""
    return channel.rsplit(".", 1)[-1]


def choose(seed: int, number: int, options: list[str], think: float) -> tuple[str, float]:
    """The option voter ``number`` picks and how long it thinks, from the seed alone.

    Voters share a taste (weights drawn from the seed) so results lean somewhere.
    """
    taste = random.Random(f"{seed}:taste")
    weights = [taste.uniform(0.5, 3.0) for _ in options]
    mine = random.Random(f"{seed}:voter:{number}")
    option = mine.choices(options, weights)[0]
    return option, round(mine.uniform(0.1, 1.0) * think, 3)


# -- the tally: pure logic ---------------------------------------------------------


@dataclass
class Outcome:
    """What the host made of one message on a vote channel."""

    kind: str  # 'counted', 'rejected', 'late', 'ready' or 'ignored'
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

    def take(self, channel: str, message: Any, now: float, sender: int | None = None) -> Outcome:
        """Judges a message that arrived on ``channel`` at monotonic time ``now``, sent by
        ``sender`` (``Message.sender``; None when unknown)."""
        at = 0.0 if self.due is None else now - self.due
        voter = short_name(channel)
        if not isinstance(message, dict):
            return self._reject(voter, "not a ballot: a JSON object is expected", at)
        kind = message.get("kind")
        if kind in ("question", "closed"):
            return Outcome("ignored", voter)  # the host's own broadcasts, seen on the way back
        if kind == "ready":
            if channel in self.registered and message.get("voter") == channel:
                self.ready.add(channel)
                if sender is not None:
                    self.senders.setdefault(channel, sender)
                return Outcome("ready", voter)
            return Outcome("ignored", voter)
        if kind != "ballot":
            return self._reject(voter, f"not a ballot: kind {kind!r}", at)
        claimed = message.get("voter")
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
        option = message.get("option")
        if option not in self.options:
            return self._reject(voter, f"invalid option {option!r}", at)
        if self.due is None or channel not in self.asked:
            return self._reject(voter, "not asked", at)
        if channel in self.ballots or any(outcome.voter == voter for outcome in self.late):
            return self._reject(voter, "duplicate: this voter's ballot came already", at)
        if self.closed_at is not None:
            outcome = Outcome("late", voter, option, f"{now - self.closed_at:.2f} s late", at)
            self.late.append(outcome)
            return outcome
        self.ballots[channel] = option
        self.last_ballot = now
        return Outcome("counted", voter, option, at=at)

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

    def to_message(self) -> dict[str, Any]:
        return {
            "kind": "closed",
            "vote": self.vote_id,
            "counts": self.counts,
            "winners": self.winners,
            "counted": self.counted,
            "asked": self.asked,
            "by_timeout": self.by_timeout,
        }


# -- views: what the host and the joiner report ------------------------------------


class HostView(Protocol):
    def started(self, vote: VoteHost) -> None: ...
    def joined(self, origin: str, voters: list[str]) -> None: ...
    def refused(self, origin: str, reason: str) -> None: ...
    def gathering(self, vote: VoteHost, wait_left: float) -> None: ...
    def asked(self, vote: VoteHost) -> None: ...
    def outcome(self, vote: VoteHost, outcome: Outcome) -> None: ...
    def closed(self, vote: VoteHost) -> None: ...


class JoinView(Protocol):
    def welcomed(self, welcome: dict[str, Any], workers: int) -> None: ...
    def message(self, message: Message) -> None: ...


# -- voters: in worker processes (or threads) --------------------------------------


def run_worker(context: Context, vote_id: str, channels: list[str], question_by: float) -> None:
    """Hosts several voters, a thread each; returns when all of them are done."""
    if multiprocessing.parent_process() is not None:
        # Ctrl-C is for the program that started us: it ends the vote and stops us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    bus = Bus(context)
    publisher = bus.publish()
    threads = [
        threading.Thread(
            target=run_voter,
            args=(bus, publisher, vote_id, channel, question_by),
            name=short_name(channel),
            daemon=True,
        )
        for channel in channels
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_voter(
    bus: Bus, publisher: Publisher, vote_id: str, channel: str, question_by: float
) -> None:
    """One direct channel: ready, wait for the question, think, vote, wait for the result.

    Every wait is bounded: ``question_by`` (wall clock) for the question, the
    closing time plus ``CLOSE_SLACK`` for the result.
    """
    with bus.subscribe(channel) as inbox:
        if not inbox.wait_ready(READY_TIMEOUT):
            return
        publisher.put(channel, {"kind": "ready", "vote": vote_id, "voter": channel})
        question = _wait_for(inbox, ("question", "closed"), question_by)
        if question is None or question["kind"] != "question":
            return
        option, think = choose(
            question["seed"], voter_number(channel), question["options"], question["think"]
        )
        due = float(question["due"])
        now = time.time()
        # The due time is the host's clock: a voter whose clock runs behind waits no more
        # than the lead the host gave.
        closed = _think(inbox, now + min(max(0.0, due - now), DUE_LEAD) + think)
        ballot = {"kind": "ballot", "vote": vote_id, "voter": channel, "option": option}
        publisher.put(channel, ballot | {"think": think})
        if not closed:
            _wait_for(inbox, ("closed",), due + float(question["timeout"]) + CLOSE_SLACK)


def _think(inbox: Subscriber, until: float) -> bool:
    """Thinks until ``until`` (wall clock) without acting on the vote meanwhile, so a
    slow voter may vote after the close, as people do; True when the close was seen."""
    closed = False
    while (left := until - time.time()) > 0:
        message = inbox.get(block=True, timeout=left)
        closed = closed or (isinstance(message, dict) and message.get("kind") == "closed")
    return closed


def _wait_for(inbox: Subscriber, kinds: tuple[str, ...], until: float) -> dict[str, Any] | None:
    """The first message of one of ``kinds``, or None once the wall clock passes ``until``."""
    while (left := until - time.time()) > 0:
        message = inbox.get(block=True, timeout=left)
        if isinstance(message, dict) and message.get("kind") in kinds:
            return message
    return None


class Workers:
    """The processes (or, on process-local transports, threads) hosting voters."""

    def __init__(
        self, context: Context, vote_id: str, channels: list[str], count: int, question_by: float
    ) -> None:
        count = max(1, min(count, len(channels)))
        shares = [channels[index::count] for index in range(count)]
        self.in_threads = transport_for(BusSettings.from_context(context)).process_local
        self.units: list[Any] = []
        for index, share in enumerate(shares):
            args = (context, vote_id, share, question_by)
            if self.in_threads:
                unit: Any = threading.Thread(
                    target=run_worker, args=args, name=f"voters-{index}", daemon=True
                )
            else:
                unit = multiprocessing.Process(
                    target=run_worker, args=args, name=f"shellbot-voters-{index}", daemon=True
                )
            self.units.append(unit)
        for unit in self.units:
            unit.start()

    def __len__(self) -> int:
        return len(self.units)

    def stop(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the workers, then ends the processes left."""
        deadline = time.monotonic() + timeout
        for unit in self.units:
            unit.join(max(0.0, deadline - time.monotonic()))
        if not self.in_threads:
            for unit in self.units:
                if unit.is_alive():
                    unit.terminate()
                    unit.join(1.0)


# -- the host: the group channel -----------------------------------------------------


@dataclass
class VoteSettings:
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

    def __post_init__(self) -> None:
        if len(set(self.options)) < 2:
            raise ValueError("a vote needs at least two different options")


class VoteHost:
    """Runs one vote from the group channel; ``run()`` returns its ``Result``."""

    def __init__(self, settings: VoteSettings, view: HostView) -> None:
        self.settings = settings
        self.view = view
        self.vote_id = secrets.token_hex(3)
        self.seed = settings.seed if settings.seed is not None else random.randrange(10_000)
        self.tally = Tally(self.vote_id, list(settings.options))
        self.context = Context(
            {"bus": {"address": settings.address, "curve": settings.curve, "nats": settings.nats}}
        )
        self.bus = Bus(self.context)
        self.bus.check()
        self.publisher: Publisher | None = None
        self.inbox: Subscriber | None = None
        self.workers: list[Workers] = []
        self.joins: dict[str, dict[str, Any]] = {}  # token -> welcome
        self.join_deadlines: dict[str, float] = {}  # channel -> monotonic deadline to be ready
        self.local: list[str] = []
        self.asked_wall: float | None = None
        self.wait_until = time.monotonic() + settings.wait

    @property
    def holds_hub(self) -> bool:
        return self.publisher is not None and self.publisher.holds_hub

    @property
    def broker(self) -> str | None:
        """What joins the vote's parties when it is a broker ("a NATS server"), else None:
        then no process of the vote holds a hub, or could."""
        transport = transport_for(BusSettings.from_context(self.context))
        return transport.broker_name or None if transport.hub_kind is HubKind.BROKER else None

    @property
    def worker_count(self) -> int:
        return sum(len(workers) for workers in self.workers)

    @property
    def in_threads(self) -> bool:
        return bool(self.workers) and self.workers[0].in_threads

    def run(self) -> Result:
        try:
            return self._run()
        finally:
            self._shutdown()

    def _run(self) -> Result:
        settings = self.settings
        self.publisher = self.bus.publish()
        self.publisher.start()
        self.inbox = self.bus.subscribe([JOIN_CHANNEL, f"vote.{self.vote_id}.*"], pattern=True)
        if not self.inbox.wait_ready(READY_TIMEOUT):
            raise VoteError(
                f"The bus at {redacted(settings.address)} did not confirm the host's subscription"
            )
        self.local = [voter_channel(self.vote_id, n) for n in range(1, settings.voters + 1)]
        self.tally.register(self.local, "local")
        self.wait_until = time.monotonic() + settings.wait
        question_by = time.time() + settings.wait + READY_TIMEOUT + JOIN_READY_TIMEOUT
        self.workers.append(
            Workers(self.context, self.vote_id, self.local, settings.workers, question_by)
        )
        self.view.started(self)
        locals_by = time.monotonic() + READY_TIMEOUT
        self._pump(lambda now: self._may_ask(now, locals_by), phase="gathering")
        self._ask()
        assert self.tally.due is not None
        self._pump(lambda now: self.tally.complete, self.tally.due + settings.timeout)
        by_timeout = not self.tally.complete
        closed_at = self.tally.closed_at = time.monotonic()
        assert self.publisher is not None
        self.publisher.put(list(self.tally.registered), self.result(by_timeout).to_message())
        self.view.closed(self)
        if by_timeout:
            tally = self.tally
            self._pump(
                lambda now: all(v in tally.ballots or self._late(v) for v in tally.asked),
                closed_at + LATE_GRACE,
            )
        return self.result(by_timeout)

    def _late(self, channel: str) -> bool:
        name = short_name(channel)
        return any(outcome.voter == name for outcome in self.tally.late)

    def _may_ask(self, now: float, locals_by: float) -> bool:
        tally = self.tally
        locals_ready = all(channel in tally.ready for channel in self.local)
        if not locals_ready and now < locals_by:
            return False
        joined_ready = sum(
            1
            for channel, origin in tally.registered.items()
            if origin != "local" and channel in tally.ready
        )
        expect = self.settings.expect
        if now < self.wait_until and (expect == 0 or joined_ready < expect):
            return False
        # Joined voters welcomed but not yet ready get a bounded while.
        return all(
            channel in tally.ready or now >= deadline
            for channel, deadline in self.join_deadlines.items()
        )

    def _ask(self) -> None:
        tally = self.tally
        tally.asked = [channel for channel in tally.registered if channel in tally.ready]
        if not tally.asked:
            raise VoteError(
                f"No voter got ready within {READY_TIMEOUT:.0f} s: is the bus at "
                f"{redacted(self.settings.address)} reachable from the worker processes?"
            )
        due_wall = time.time() + DUE_LEAD
        tally.due = time.monotonic() + DUE_LEAD
        self.asked_wall = due_wall
        question = {
            "kind": "question",
            "vote": self.vote_id,
            "question": self.settings.question,
            "options": tally.options,
            "due": due_wall,
            "timeout": self.settings.timeout,
            "think": self.settings.think,
            "seed": self.seed,
        }
        assert self.publisher is not None
        self.publisher.put(tally.asked, question)  # pattern 1: one put, every direct channel
        self.view.asked(self)

    def _pump(
        self, done: Callable[[float], bool], deadline: float | None = None, phase: str = ""
    ) -> None:
        """Takes messages and refreshes the view until ``done(now)`` or the deadline."""
        assert self.inbox is not None
        receive = self.inbox.receive
        next_tick = 0.0
        while True:
            now = time.monotonic()
            if done(now) or (deadline is not None and now >= deadline):
                return
            if phase == "gathering" and now >= next_tick:
                next_tick = now + TICK
                self.view.gathering(self, self.wait_left)
            wait = TICK if deadline is None else min(TICK, deadline - now)
            message = receive(block=True, timeout=wait)
            if message is None:
                continue
            if message.channel == JOIN_CHANNEL:
                self._join(message.message)
            elif not message.channel.startswith(JOIN_CHANNEL + "."):
                outcome = self.tally.take(
                    message.channel, message.message, time.monotonic(), message.sender
                )
                if outcome.kind != "ignored":
                    self.view.outcome(self, outcome)

    @property
    def wait_left(self) -> float:
        return max(0.0, self.wait_until - time.monotonic())

    def _join(self, request: Any) -> None:
        """Answers a join request on the joiner's reply channel."""
        if not isinstance(request, dict) or not isinstance(request.get("token"), str):
            return
        token = request["token"]
        reply = f"{JOIN_CHANNEL}.{token}"
        origin = str(request.get("from") or token)
        assert self.publisher is not None
        if token in self.joins:  # the joiner asked again before our answer reached it
            self.publisher.put(reply, self.joins[token])
            return
        count = request.get("voters")
        if self.tally.due is not None:
            answer: dict[str, Any] = {"kind": "refused", "reason": "the question is already out"}
            self.view.refused(origin, answer["reason"])
        elif not isinstance(count, int) or not 0 < count <= MAX_VOTERS:
            answer = {"kind": "refused", "reason": f"ask for 1 to {MAX_VOTERS} voters"}
            self.view.refused(origin, answer["reason"])
        else:
            first = len(self.tally.registered) + 1
            channels = [voter_channel(self.vote_id, n) for n in range(first, first + count)]
            self.tally.register(channels, origin)
            deadline = time.monotonic() + JOIN_READY_TIMEOUT
            self.join_deadlines.update(dict.fromkeys(channels, deadline))
            answer = {
                "kind": "welcome",
                "vote": self.vote_id,
                "voters": channels,
                "question": self.settings.question,
                "options": self.tally.options,
                "ask_by": time.time() + self.wait_left + JOIN_READY_TIMEOUT + READY_TIMEOUT,
                "timeout": self.settings.timeout,
            }
            self.joins[token] = answer
            self.view.joined(origin, [short_name(channel) for channel in channels])
        self.publisher.put(reply, answer)

    def result(self, by_timeout: bool) -> Result:
        tally = self.tally
        last = None
        if tally.last_ballot is not None and tally.due is not None:
            last = max(0.0, tally.last_ballot - tally.due)
        return Result(
            vote_id=self.vote_id,
            question=self.settings.question,
            options=tally.options,
            counts=tally.counts,
            winners=tally.winners,
            asked=len(tally.asked),
            counted=len(tally.ballots),
            registered=len(tally.registered),
            by_timeout=by_timeout,
            last_ballot_after=last,
            rejected=list(tally.rejected),
            late=list(tally.late),
            not_ready=[short_name(c) for c in tally.registered if c not in tally.asked],
            silent=[short_name(channel) for channel in tally.silent],
        )

    def _shutdown(self) -> None:
        for workers in self.workers:
            workers.stop(timeout=1.0)
        if self.inbox is not None:
            self.inbox.close()
        if self.publisher is not None:
            self.publisher.stop(timeout=self.publisher.settings.drain_timeout + 1.0)


# -- the joiner: voters from another terminal or host ----------------------------------


def join_vote(
    address: str,
    voters: int,
    workers: int,
    wait: float,
    view: JoinView,
    curve: dict[str, str] | None = None,
    nats: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Adds ``voters`` to the vote running at ``address``; returns the host's result message.

    Waits up to ``wait`` seconds for a host to answer. ``nats``: the bus.nats.* settings.
    """
    # What the joiner itself sends (join requests) is worth little once it gives up.
    context = Context(
        {"bus": {"address": address, "linger": 1.0, "curve": curve or {}, "nats": nats or {}}}
    )
    bus = Bus(context)
    bus.check()
    publisher = bus.publish()
    if transport_for(BusSettings.from_context(context)).process_local:
        raise VoteError(
            f"{address} lives inside one process: join a vote over tcp://, ipc:// or "
            "nats:// instead"
        )
    shown = redacted(address)  # for messages: no password or token
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait
    with bus.subscribe(f"{JOIN_CHANNEL}.{token}") as replies:
        if not replies.wait_ready(wait):
            raise VoteError(
                f"No bus answered at {shown} within {wait:g} s: is a vote running there?"
            )
        request = {"kind": "join", "token": token, "voters": voters, "from": _origin()}
        answer = None
        while answer is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VoteError(
                    f"No vote took voters at {shown} within {wait:g} s: start one with "
                    "`shellbot-bus vote --wait 30`, then join it"
                )
            publisher.put(JOIN_CHANNEL, request)
            answer = replies.get(block=True, timeout=min(JOIN_RETRY, left))
    if not isinstance(answer, dict) or answer.get("kind") != "welcome":
        reason = answer.get("reason") if isinstance(answer, dict) else answer
        raise VoteError(f"The vote at {shown} refused to add voters: {reason}")
    channels: list[str] = answer["voters"]
    vote_id: str = answer["vote"]
    with bus.subscribe(channels) as watch:
        # Ready before our voters are, so we see all that happens on their channels.
        if not watch.wait_ready(READY_TIMEOUT):
            raise VoteError(f"The bus at {shown} stopped answering")
        pool = Workers(context, vote_id, channels, workers, float(answer["ask_by"]))
        view.welcomed(answer, len(pool))
        try:
            closed = _follow(watch, view, float(answer["ask_by"]), float(answer["timeout"]))
        finally:
            pool.stop(timeout=LATE_GRACE)
    if closed is None:
        raise VoteError(f"The vote at {shown} never ended: its host may have stopped")
    return closed


def _follow(watch: Subscriber, view: JoinView, ask_by: float, timeout: float) -> Any:
    """Shows what happens on our voters' channels until the host closes the vote."""
    until = ask_by
    asked = False
    while (left := until - time.time()) > 0:
        message = watch.receive(block=True, timeout=left)
        body = None if message is None else message.message
        kind = body.get("kind") if isinstance(body, dict) else None
        if kind == "question" and not asked:  # it came once per voter: show it once
            asked = True
            until = float(body["due"]) + timeout + CLOSE_SLACK  # type: ignore[index]
            view.message(message)  # type: ignore[arg-type]
        elif kind == "ballot":
            view.message(message)  # type: ignore[arg-type]
        elif kind == "closed":
            return body
    return None


def _origin() -> str:
    with contextlib.suppress(OSError):
        return f"{socket.gethostname()}:{multiprocessing.current_process().pid}"
    return "a joiner"
