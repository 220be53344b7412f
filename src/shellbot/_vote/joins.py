"""The host's side of joining: voters added from another terminal or host, over the bus.

A joiner asks on ``JOIN_CHANNEL``, again until answered; the host registers its
voters and welcomes it on the joiner's reply channel, or refuses (once the
question is out, or for a count it does not take). A request asked again gets
the same answer: the first one may not have reached the joiner yet.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .messages import JoinRequest, Refused, Welcome, reply_channel, short_name, voter_channel
from .settings import JOIN_READY_TIMEOUT, MAX_VOTERS, READY_TIMEOUT, VoteSettings
from .tally import Tally

if TYPE_CHECKING:
    from ..bus import Publisher
    from .host import HostView


class Joins:
    """Answers join requests for one vote and knows when the joined voters are due."""

    def __init__(
        self,
        settings: VoteSettings,
        tally: Tally,
        publisher: Publisher,
        view: HostView,
        wait_until: float,
    ) -> None:
        self.settings = settings
        self.tally = tally
        self.publisher = publisher
        self.view = view
        self.wait_until = wait_until  # monotonic: when the host stops waiting for joiners
        self.refusing: str | None = None  # why every join is refused from now on
        self._answers: dict[str, Welcome] = {}  # token -> welcome
        self._deadlines: dict[str, float] = {}  # channel -> monotonic deadline to be ready

    @property
    def wait_left(self) -> float:
        return max(0.0, self.wait_until - time.monotonic())

    def refuse_from_now(self, reason: str) -> None:
        self.refusing = reason

    def answer(self, request: JoinRequest) -> None:
        """Answers a join request on the joiner's reply channel."""
        reply = reply_channel(request.token)
        welcome = self._answers.get(request.token)
        if welcome is not None:  # the joiner asked again before our answer reached it
            self.publisher.put(reply, welcome.to_body())
            return
        count = request.voters
        if self.refusing is not None:
            answer: Welcome | Refused = Refused(self.refusing)
        elif not isinstance(count, int) or not 0 < count <= MAX_VOTERS:
            answer = Refused(f"ask for 1 to {MAX_VOTERS} voters")
        else:
            answer = self._welcome(request, count)
        if isinstance(answer, Refused):
            self.view.refused(request.origin, answer.reason)
        self.publisher.put(reply, answer.to_body())

    def _welcome(self, request: JoinRequest, count: int) -> Welcome:
        tally = self.tally
        first = len(tally.registered) + 1
        channels = [voter_channel(tally.vote_id, n) for n in range(first, first + count)]
        tally.register(channels, request.origin)
        deadline = time.monotonic() + JOIN_READY_TIMEOUT
        self._deadlines.update(dict.fromkeys(channels, deadline))
        welcome = self._answers[request.token] = Welcome(
            vote=tally.vote_id,
            voters=channels,
            question=self.settings.question,
            options=tally.options,
            ask_by=time.time() + self.wait_left + JOIN_READY_TIMEOUT + READY_TIMEOUT,
            timeout=self.settings.timeout,
        )
        self.view.joined(request.origin, [short_name(channel) for channel in channels])
        return welcome

    def ready_count(self) -> int:
        """How many joined voters are ready."""
        tally = self.tally
        return sum(1 for channel in self._deadlines if channel in tally.ready)

    def settled(self, now: float) -> bool:
        """True when every joined voter is ready or past its bounded while to be."""
        return all(
            channel in self.tally.ready or now >= deadline
            for channel, deadline in self._deadlines.items()
        )
