"""What the server keeps for a durable subscriber: its JetStream consumer.

``Consumer`` names it, makes it (again) at a stream sequence with the
subscriber's filters, reads where a new process of the same name begins (the
acknowledgement floor, and how much of a run a predecessor closing in the
middle of it was handed), writes that, and deletes it. The delivery it pushes
is the receiver's (``jetstream.durable``).

A consumer's position cannot be moved, so making it anew at another sequence
means a new consumer. It is made before the one it replaces is deleted, so
that the server never holds no position for the name, whatever stops the
process or its connection between the two requests: a name has two consumer
names it alternates between, ``name`` and ``name~2`` (``~`` is in no
subscriber's name), each made with a generation one above the last in its
metadata. Both exist only between the making of one and the deletion of the
other (or after that deletion failed: the next making deletes it first); a
successor that finds both takes the newer one's position.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from nats.js import api

from .... import errors
from .. import errors as mapped
from .stream import Stream

log = logging.getLogger("shellbot.bus")

ACK_WAIT = 30.0  # seconds the server waits for an acknowledgement before it delivers again
HEARTBEAT = 1.0  # seconds between the server's heartbeats while nothing is delivered
# NATS messages delivered and not yet acknowledged, at most: room for a few seconds of
# traffic held back behind a run the stream stored late (see order).
MAX_ACK_PENDING = 10_000
# The metadata key where a subscriber closing in the middle of a run leaves how many of
# its messages the program was handed: "<stream sequence>:<count>".
HANDED_KEY = "shellbot-handed"
GENERATION_KEY = "shellbot-generation"  # which of a name's two consumers is the newer
SECOND = "~2"  # the second consumer of a name ends with it
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_name(name: Any) -> str:
    """A durable subscriber's name: letters, digits, '_' or '-' (a consumer's name)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise errors.ConfigurationError(
            f"durable= takes a name of 1 to 64 letters, digits, '_' or '-', as in "
            f"durable='ballots'; got {name!r}"
        )
    return name


class Consumer:
    """One durable subscriber's consumer on the bus's stream (of its two names, the one
    that holds the position)."""

    def __init__(self, stream: Stream, name: str, high_water_mark: int) -> None:
        self.stream = stream
        self.name = check_name(name)
        self.names = (self.name, self.name + SECOND)
        # Never more in flight than the inbox holds: a frame it dropped would leave a gap.
        self._max_pending = max(1, min(MAX_ACK_PENDING, high_water_mark))
        self._made_with: api.ConsumerConfig | None = None
        # What the server holds, as far as this process knows; looked up again when a
        # request to make one got no answer (it may have been made).
        self._known = False
        self._current: str | None = None  # the consumer that holds the position
        self._generation = 0  # the highest generation made for the name
        self._present: set[str] = set()  # the consumers that may exist

    async def _look_up(self) -> api.ConsumerInfo | None:
        """Both consumers of the name: the newer one holds its position (None: a name the
        server never knew, or forgot)."""
        found = []
        for name in self.names:
            try:
                found.append(await self.stream.jetstream.consumer_info(self.stream.name, name))
            except mapped.NotFound:
                continue
        self._present = {info.name for info in found}
        newest = max(found, key=_generation, default=None)
        self._current = newest.name if newest is not None else None
        self._generation = _generation(newest) if newest is not None else 0
        self._known = True
        return newest

    async def start(self) -> tuple[int, tuple[int, int] | None]:
        """Where a new process of this name begins: the acknowledgement floor (for a new
        name, the next message stored), and the run a predecessor was handed part of,
        as (stream sequence, messages handed)."""
        info = await self._look_up()
        if info is None:
            state = (await self.stream.jetstream.stream_info(self.stream.name)).state
            return state.last_seq + 1, None
        handed = (info.config.metadata or {}).get(HANDED_KEY, "")
        sequence, _, count = handed.partition(":")
        partly = (int(sequence), int(count)) if sequence.isdigit() and count.isdigit() else None
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return max(floor + 1, info.config.opt_start_seq or 1), partly

    async def make(
        self, inbox: str, start: int, filters: list[str], handed: tuple[int, int] | None = None
    ) -> None:
        """Makes the consumer anew: pushing to ``inbox`` from stream sequence ``start``;
        ``handed`` is kept for a successor (see ``keep_handed``). The one it replaces
        is deleted once this one is made."""
        jetstream = self.stream.jetstream
        if not self._known:
            await self._look_up()
        made = self.names[1] if self._current == self.names[0] else self.names[0]
        if made in self._present:  # the older of two, left by a process stopped between them
            with contextlib.suppress(mapped.NotFound):
                await jetstream.delete_consumer(self.stream.name, made)
            self._present.discard(made)
        metadata = {GENERATION_KEY: str(self._generation + 1)}
        if handed is not None:
            metadata[HANDED_KEY] = f"{handed[0]}:{handed[1]}"
        config = api.ConsumerConfig(
            durable_name=made,
            deliver_subject=inbox,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            max_ack_pending=self._max_pending,
            idle_heartbeat=HEARTBEAT,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
            metadata=metadata,
        )
        self._present.add(made)
        try:
            await jetstream.add_consumer(self.stream.name, config)
        except BaseException:
            self._known = False  # made or not: the next attempt looks
            raise
        replaced, self._current = self._current, made
        self._generation += 1
        self._made_with = config
        if replaced is not None:
            try:
                await jetstream.delete_consumer(self.stream.name, replaced)
            except mapped.NotFound:
                pass
            except mapped.NOT_NOW as error:
                # Left for the next making (which deletes it first) or forget().
                log.debug("NATS: durable %s: %s not deleted yet (%s)", self.name, replaced, error)
                return
            self._present.discard(replaced)

    async def keep_handed(self, sequence: int, handed: int) -> None:
        """Leaves for a successor that the program was handed the first ``handed``
        messages of the run at stream ``sequence``."""
        if self._made_with is not None:
            metadata = {**(self._made_with.metadata or {}), HANDED_KEY: f"{sequence}:{handed}"}
            config = self._made_with.evolve(metadata=metadata)
            await self.stream.jetstream.add_consumer(self.stream.name, config)

    async def delete(self) -> None:
        """Deletes both consumers of the name: the server forgets it."""
        for name in self.names:
            with contextlib.suppress(mapped.NotFound):
                await self.stream.jetstream.delete_consumer(self.stream.name, name)
        self._known, self._current, self._present, self._made_with = True, None, set(), None


def _generation(info: api.ConsumerInfo) -> int:
    """Which of a name's consumers was made later: 0 for one made without a generation."""
    generation = (info.config.metadata or {}).get(GENERATION_KEY, "")
    return int(generation) if generation.isdigit() else 0
