"""The voters: direct channels, served by threads in a few worker processes.

Each voter subscribes to its own channel, says it is ready there, waits for
the question, thinks, votes on its own channel (pattern 2) and waits for the
result; every wait is bounded. On process-local transports the workers are
threads of the host itself.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import threading
import time
from typing import Any

from .._transports import transport_of
from ..bus import Bus, Publisher, Subscriber
from ..context import Context
from .messages import Ballot, Closed, Question, Ready, VoteMessage, parse, short_name, voter_number
from .settings import CLOSE_SLACK, DUE_LEAD, READY_TIMEOUT, STORE_TIMEOUT


def choose(seed: int, number: int, options: list[str], think: float) -> tuple[str, float]:
    """The option voter ``number`` picks and how long it thinks, from the seed alone.

    Voters share a taste (weights drawn from the seed) so results lean somewhere.
    """
    taste = random.Random(f"{seed}:taste")
    weights = [taste.uniform(0.5, 3.0) for _ in options]
    mine = random.Random(f"{seed}:voter:{number}")
    option = mine.choices(options, weights)[0]
    return option, round(mine.uniform(0.1, 1.0) * think, 3)


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
    durable = publisher.settings.durable
    # Durable: the voter's position is kept under the channel's name, so a voter whose
    # process died and was started again gets the question it had not answered.
    name = channel.replace(".", "-") if durable else None
    with bus.subscribe(channel, durable=name) as inbox:
        if not inbox.wait_ready(READY_TIMEOUT):
            return
        try:
            _vote_once(inbox, publisher, vote_id, channel, question_by, durable)
        finally:
            if durable:
                inbox.close(forget=True)


def _vote_once(
    inbox: Subscriber,
    publisher: Publisher,
    vote_id: str,
    channel: str,
    question_by: float,
    durable: bool,
) -> None:
    """Ready, the question, the ballot, the result: one voter's part of the vote."""
    publisher.put(channel, Ready(vote_id, channel).to_body())
    question = _wait_for(inbox, (Question, Closed), question_by)
    if not isinstance(question, Question):
        return
    option, think = choose(question.seed, voter_number(channel), question.options, question.think)
    now = time.time()
    # The due time is the host's clock: a voter whose clock runs behind waits no more
    # than the lead the host gave.
    until = now + min(max(0.0, question.due - now), DUE_LEAD) + think
    if durable:
        # The question is done with only once the ballot is stored: reading on while
        # thinking would acknowledge it, and a voter killed meanwhile would not vote.
        closed = False
        time.sleep(max(0.0, until - time.time()))
        publisher.put(channel, Ballot(vote_id, channel, option, think).to_body())
        _wait_stored(publisher)
    else:
        closed = _think(inbox, until)
        publisher.put(channel, Ballot(vote_id, channel, option, think).to_body())
    if not closed:
        _wait_for(inbox, (Closed,), question.due + question.timeout + CLOSE_SLACK)


def _wait_stored(publisher: Publisher) -> None:
    """Until the server stored what this process put (at most STORE_TIMEOUT)."""
    deadline = time.monotonic() + STORE_TIMEOUT
    while publisher.stats.get("unconfirmed", 0) and time.monotonic() < deadline:
        time.sleep(0.01)


def _think(inbox: Subscriber, until: float) -> bool:
    """Thinks until ``until`` (wall clock) without acting on the vote meanwhile, so a
    slow voter may vote after the close, as people do; True when the close was seen."""
    closed = False
    while (left := until - time.time()) > 0:
        body = inbox.get(block=True, timeout=left)
        closed = closed or isinstance(parse(body), Closed)
    return closed


def _wait_for(
    inbox: Subscriber, kinds: tuple[type[VoteMessage], ...], until: float
) -> VoteMessage | None:
    """The first message of one of ``kinds``, or None once the wall clock passes ``until``."""
    while (left := until - time.time()) > 0:
        message = parse(inbox.get(block=True, timeout=left))
        if isinstance(message, kinds):
            return message
    return None


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class Workers:
    """The processes (or, on process-local transports, threads) hosting voters."""

    def __init__(
        self,
        context: Context,
        vote_id: str,
        channels: list[str],
        count: int,
        question_by: float,
        restart: bool = False,
    ) -> None:
        count = max(1, min(count, len(channels)))
        shares = [channels[index::count] for index in range(count)]
        self.in_threads = transport_of(context).process_local
        self.restart = restart and not self.in_threads
        self.units: list[Any] = []
        self._args = [(context, vote_id, share, question_by) for share in shares]
        for index in range(len(shares)):
            self.units.append(self._unit(index))
        for unit in self.units:
            unit.start()

    def _unit(self, index: int) -> Any:
        args = self._args[index]
        if self.in_threads:
            return threading.Thread(
                target=run_worker, args=args, name=f"voters-{index}", daemon=True
            )
        return multiprocessing.Process(
            target=run_worker, args=args, name=f"shellbot-voters-{index}", daemon=True
        )

    def restart_dead(self) -> list[str]:
        """With ``restart`` (a durable vote): starts again each worker process that died
        of a signal; returns their names."""
        restarted = []
        if self.restart:
            for index, unit in enumerate(self.units):
                if unit.exitcode is not None and unit.exitcode < 0:
                    self.units[index] = self._unit(index)
                    self.units[index].start()
                    restarted.append(f"{unit.name} (pid {unit.pid}, {_signal_name(unit.exitcode)})")
        return restarted

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
