"""The host: the group channel, which gathers its voters, asks, tallies and closes.

``VoteHost.run()`` goes through the phases one method each: open the bus
(``_open``), start the local voters (``_start_voters``), gather until they and
the joiners are ready (``_gather``), ask (``_ask``), collect the ballots
(``_collect``), close (``_close``) and, after a close by the timeout, listen
for late ballots (``_listen_for_late``). Every phase takes messages through
``_take``, which hands joins to ``Joins`` and the rest to the ``Tally``.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from .._settings import redacted
from .._transports import HubKind, transport_of
from ..bus import Bus, Publisher, Subscriber
from ..context import Context
from .joins import Joins
from .messages import (
    JOIN_CHANNEL,
    JoinRequest,
    Question,
    is_reply_channel,
    parse,
    short_name,
    voter_channel,
)
from .settings import (
    DUE_LEAD,
    JOIN_READY_TIMEOUT,
    LATE_GRACE,
    READY_TIMEOUT,
    TICK,
    VoteError,
    VoteSettings,
)
from .tally import Outcome, Result, Tally
from .voters import Workers


class HostView(Protocol):
    """What the host reports to; the command line renders it."""

    def started(self, vote: VoteHost) -> None: ...
    def joined(self, origin: str, voters: list[str]) -> None: ...
    def refused(self, origin: str, reason: str) -> None: ...
    def gathering(self, vote: VoteHost, wait_left: float) -> None: ...
    def asked(self, vote: VoteHost) -> None: ...
    def outcome(self, vote: VoteHost, outcome: Outcome) -> None: ...
    def closed(self, vote: VoteHost) -> None: ...
    def restarted(self, worker: str) -> None: ...


class VoteHost:
    """Runs one vote from the group channel; ``run()`` returns its ``Result``."""

    def __init__(self, settings: VoteSettings, view: HostView) -> None:
        self.settings = settings
        self.view = view
        self.vote_id = secrets.token_hex(3)
        self.seed = settings.seed if settings.seed is not None else random.randrange(10_000)
        self.tally = Tally(self.vote_id, list(settings.options), durable=settings.durable)
        self.context = Context(
            {
                "bus": {
                    "address": settings.address,
                    "curve": settings.curve,
                    "nats": settings.nats,
                    "durable": settings.durable,
                }
            }
        )
        self.bus = Bus(self.context)
        self.bus.check()
        self.publisher: Publisher | None = None
        self.inbox: Subscriber | None = None
        self.joins: Joins | None = None
        self.workers: list[Workers] = []
        self.local: list[str] = []
        self.asked_wall: float | None = None

    @property
    def holds_hub(self) -> bool:
        return self.publisher is not None and self.publisher.holds_hub

    @property
    def broker(self) -> str | None:
        """What joins the vote's parties when it is a broker ("a NATS server"), else None:
        then no process of the vote holds a hub, or could."""
        transport = transport_of(self.context)
        return transport.broker_name or None if transport.hub_kind is HubKind.BROKER else None

    @property
    def worker_count(self) -> int:
        return sum(len(workers) for workers in self.workers)

    @property
    def in_threads(self) -> bool:
        return bool(self.workers) and self.workers[0].in_threads

    @property
    def wait_left(self) -> float:
        return 0.0 if self.joins is None else self.joins.wait_left

    def run(self) -> Result:
        try:
            publisher, inbox = self._open()
            self._start_voters(publisher)
            self._gather(inbox)
            self._ask(publisher)
            self._collect(inbox)
            by_timeout = not self.tally.complete
            self._close(publisher, by_timeout)
            if by_timeout:
                self._listen_for_late(inbox)
            return self.result(by_timeout)
        finally:
            self._shutdown()

    def _open(self) -> tuple[Publisher, Subscriber]:
        """The host on the bus: a publisher (which may hold the hub), and a subscriber of
        the join channel and of every channel of the vote, confirmed live."""
        publisher = self.publisher = self.bus.publish()
        publisher.start()
        inbox = self.inbox = self.bus.subscribe(
            [JOIN_CHANNEL, f"vote.{self.vote_id}.*"],
            pattern=True,
            durable=f"vote-{self.vote_id}-host" if self.settings.durable else None,
        )
        if not inbox.wait_ready(READY_TIMEOUT):
            raise VoteError(
                f"The bus at {redacted(self.settings.address)} did not confirm the host's "
                "subscription"
            )
        return publisher, inbox

    def _start_voters(self, publisher: Publisher) -> None:
        settings = self.settings
        self.local = [voter_channel(self.vote_id, n) for n in range(1, settings.voters + 1)]
        self.tally.register(self.local, "local")
        self.joins = Joins(
            settings, self.tally, publisher, self.view, time.monotonic() + settings.wait
        )
        question_by = time.time() + settings.wait + READY_TIMEOUT + JOIN_READY_TIMEOUT
        self.workers.append(
            Workers(
                self.context,
                self.vote_id,
                self.local,
                settings.workers,
                question_by,
                restart=settings.durable,
            )
        )
        self.view.started(self)

    def _gather(self, inbox: Subscriber) -> None:
        """Until the local voters are ready (or had READY_TIMEOUT), the wait for joiners
        is over (or enough of them are ready) and each joined voter is ready or due."""
        locals_by = time.monotonic() + READY_TIMEOUT
        next_tick = 0.0
        while not self._may_ask(now := time.monotonic(), locals_by):
            if now >= next_tick:
                next_tick = now + TICK
                self.view.gathering(self, self.wait_left)
            self._take(inbox, TICK)

    def _may_ask(self, now: float, locals_by: float) -> bool:
        assert self.joins is not None
        tally = self.tally
        locals_ready = all(channel in tally.ready for channel in self.local)
        if not locals_ready and now < locals_by:
            return False
        expect = self.settings.expect
        waiting = now < self.joins.wait_until
        if waiting and (expect == 0 or self.joins.ready_count() < expect):
            return False
        return self.joins.settled(now)

    def _ask(self, publisher: Publisher) -> None:
        """Pattern 1: one put of the question, to every ready voter's channel."""
        assert self.joins is not None
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
        self.joins.refuse_from_now("the question is already out")
        question = Question(
            vote=self.vote_id,
            question=self.settings.question,
            options=tally.options,
            due=due_wall,
            timeout=self.settings.timeout,
            think=self.settings.think,
            seed=self.seed,
        )
        publisher.put(tally.asked, question.to_body())
        self.view.asked(self)

    def _collect(self, inbox: Subscriber) -> None:
        """Until every asked voter voted, or the timeout after the due time."""
        assert self.tally.due is not None
        self._take_until(inbox, lambda: self.tally.complete, self.tally.due + self.settings.timeout)

    def _close(self, publisher: Publisher, by_timeout: bool) -> None:
        """The result, to every registered voter's channel."""
        self.tally.closed_at = time.monotonic()
        publisher.put(list(self.tally.registered), self.result(by_timeout).to_message().to_body())
        self.view.closed(self)

    def _listen_for_late(self, inbox: Subscriber) -> None:
        """LATE_GRACE more seconds, or until every asked voter was heard: late ballots
        are reported, not counted."""
        tally = self.tally
        assert tally.closed_at is not None
        self._take_until(
            inbox,
            lambda: all(v in tally.ballots or tally.was_late(short_name(v)) for v in tally.asked),
            tally.closed_at + LATE_GRACE,
        )

    def _take_until(self, inbox: Subscriber, done: Callable[[], bool], deadline: float) -> None:
        while not done() and (left := deadline - time.monotonic()) > 0:
            self._take(inbox, min(TICK, left))

    def _take(self, inbox: Subscriber, wait: float) -> None:
        """Takes one message, if one comes within ``wait`` seconds, and acts on it."""
        for workers in self.workers:
            for restarted in workers.restart_dead():
                self.view.restarted(restarted)
        message = inbox.receive(block=True, timeout=wait)
        if message is None:
            return
        if message.channel == JOIN_CHANNEL:
            request = parse(message.message)
            if isinstance(request, JoinRequest):
                assert self.joins is not None
                self.joins.answer(request)
        elif not is_reply_channel(message.channel):
            outcome = self.tally.take(
                message.channel, message.message, time.monotonic(), message.sender
            )
            if outcome.kind != "ignored":
                self.view.outcome(self, outcome)

    def result(self, by_timeout: bool) -> Result:
        result = self.tally.result(self.settings.question, by_timeout)
        if self.inbox is not None:  # what the network brought twice, dropped by the bus
            result.deduplicated_by_bus = self.inbox.stats.get("duplicates", 0)
        return result

    def _shutdown(self) -> None:
        for workers in self.workers:
            workers.stop(timeout=1.0)
        if self.inbox is not None:
            self.inbox.close(forget=self.inbox.durable is not None)
        if self.publisher is not None:
            self.publisher.stop(timeout=self.publisher.settings.drain_timeout + 1.0)
