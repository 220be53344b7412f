"""The joiner: voters added to a running vote from another terminal or host.

It asks the host on ``JOIN_CHANNEL`` until answered on a reply channel of its
own, starts the voters it was given, and shows what happens on their channels
until the host closes the vote.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import secrets
import socket
import time
from typing import Protocol

from .._settings import redacted
from .._transports import transport_of
from ..bus import Bus, Subscriber
from ..context import Context
from .messages import (
    JOIN_CHANNEL,
    Ballot,
    Closed,
    JoinRequest,
    Question,
    Refused,
    Welcome,
    parse,
    reply_channel,
)
from .settings import CLOSE_SLACK, JOIN_RETRY, LATE_GRACE, READY_TIMEOUT, VoteError
from .voters import Workers


class JoinView(Protocol):
    """What the joiner reports to; the command line renders it."""

    def welcomed(self, welcome: Welcome, workers: int) -> None: ...
    def asked(self, question: Question) -> None: ...
    def voted(self, channel: str, ballot: Ballot) -> None: ...


def join_vote(
    address: str,
    voters: int,
    workers: int,
    wait: float,
    view: JoinView,
    curve: dict[str, str] | None = None,
    nats: dict[str, str] | None = None,
) -> Closed:
    """Adds ``voters`` to the vote running at ``address``; returns the host's result.

    Waits up to ``wait`` seconds for a host to answer. ``nats``: the bus.nats.* settings.
    """
    # What the joiner itself sends (join requests) is worth little once it gives up.
    context = Context(
        {"bus": {"address": address, "linger": 1.0, "curve": curve or {}, "nats": nats or {}}}
    )
    bus = Bus(context)
    bus.check()
    publisher = bus.publish()
    if transport_of(context).process_local:
        raise VoteError(
            f"{address} lives inside one process: join a vote over tcp://, ipc:// or "
            "nats:// instead"
        )
    shown = redacted(address)  # for messages: no password or token
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait
    with bus.subscribe(reply_channel(token)) as replies:
        if not replies.wait_ready(wait):
            raise VoteError(
                f"No bus answered at {shown} within {wait:g} s: is a vote running there?"
            )
        request = JoinRequest(token=token, voters=voters, origin=_origin()).to_body()
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
    welcome = parse(answer)
    if not isinstance(welcome, Welcome):
        reason = welcome.reason if isinstance(welcome, Refused) else answer
        raise VoteError(f"The vote at {shown} refused to add voters: {reason}")
    with bus.subscribe(welcome.voters) as watch:
        # Ready before our voters are, so we see all that happens on their channels.
        if not watch.wait_ready(READY_TIMEOUT):
            raise VoteError(f"The bus at {shown} stopped answering")
        pool = Workers(context, welcome.vote, welcome.voters, workers, welcome.ask_by)
        view.welcomed(welcome, len(pool))
        try:
            closed = _follow(watch, view, welcome.ask_by, welcome.timeout)
        finally:
            pool.stop(timeout=LATE_GRACE)
    if closed is None:
        raise VoteError(f"The vote at {shown} never ended: its host may have stopped")
    return closed


def _follow(watch: Subscriber, view: JoinView, ask_by: float, timeout: float) -> Closed | None:
    """Shows what happens on our voters' channels until the host closes the vote."""
    until = ask_by
    asked = False
    while (left := until - time.time()) > 0:
        message = watch.receive(block=True, timeout=left)
        if message is None:
            continue
        body = parse(message.message)
        if isinstance(body, Question) and not asked:  # it came once per voter: show it once
            asked = True
            until = body.due + timeout + CLOSE_SLACK
            view.asked(body)
        elif isinstance(body, Ballot):
            view.voted(message.channel, body)
        elif isinstance(body, Closed):
            return body
    return None


def _origin() -> str:
    with contextlib.suppress(OSError):
        return f"{socket.gethostname()}:{multiprocessing.current_process().pid}"
    return "a joiner"
