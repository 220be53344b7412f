"""What the server keeps for a durable subscriber: its JetStream consumer.

``Consumer`` names it, makes it (again) at a stream sequence with the
subscriber's filters, reads where a new process of the same name begins (the
acknowledgement floor, and how much of a run a predecessor closing in the
middle of it was handed), writes that, and deletes it. The delivery it pushes
is the receiver's (``_nats_durable``).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from nats.js import api
from nats.js import errors as js_errors

from .. import errors
from ._nats_stream import Stream

ACK_WAIT = 30.0  # seconds the server waits for an acknowledgement before it delivers again
HEARTBEAT = 1.0  # seconds between the server's heartbeats while nothing is delivered
# NATS messages delivered and not yet acknowledged, at most: room for a few seconds of
# traffic held back behind a run the stream stored late (see _nats_order).
MAX_ACK_PENDING = 10_000
# The metadata key where a subscriber closing in the middle of a run leaves how many of
# its messages the program was handed: "<stream sequence>:<count>".
HANDED_KEY = "shellbot-handed"
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
    """One durable subscriber's consumer on the bus's stream."""

    def __init__(self, stream: Stream, name: str, high_water_mark: int) -> None:
        self.stream = stream
        self.name = check_name(name)
        # Never more in flight than the inbox holds: a frame it dropped would leave a gap.
        self._max_pending = max(1, min(MAX_ACK_PENDING, high_water_mark))
        self._made_with: api.ConsumerConfig | None = None

    async def start(self) -> tuple[int, tuple[int, int] | None]:
        """Where a new process of this name begins: the acknowledgement floor (for a new
        name, the next message stored), and the run a predecessor was handed part of,
        as (stream sequence, messages handed)."""
        jetstream = self.stream.jetstream
        try:
            info = await jetstream.consumer_info(self.stream.name, self.name)
        except js_errors.NotFoundError:
            state = (await jetstream.stream_info(self.stream.name)).state
            return state.last_seq + 1, None
        handed = (info.config.metadata or {}).get(HANDED_KEY, "")
        sequence, _, count = handed.partition(":")
        partly = (int(sequence), int(count)) if sequence.isdigit() and count.isdigit() else None
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return max(floor + 1, info.config.opt_start_seq or 1), partly

    async def make(self, inbox: str, start: int, filters: list[str]) -> None:
        """Makes the consumer anew: pushing to ``inbox`` from stream sequence ``start``."""
        jetstream = self.stream.jetstream
        with contextlib.suppress(js_errors.NotFoundError):
            await jetstream.delete_consumer(self.stream.name, self.name)
        config = api.ConsumerConfig(
            durable_name=self.name,
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
        )
        await jetstream.add_consumer(self.stream.name, config)
        self._made_with = config

    async def keep_handed(self, sequence: int, handed: int) -> None:
        """Leaves for a successor that the program was handed the first ``handed``
        messages of the run at stream ``sequence``."""
        if self._made_with is not None:
            config = self._made_with.evolve(metadata={HANDED_KEY: f"{sequence}:{handed}"})
            await self.stream.jetstream.add_consumer(self.stream.name, config)

    async def delete(self) -> None:
        with contextlib.suppress(js_errors.NotFoundError):
            await self.stream.jetstream.delete_consumer(self.stream.name, self.name)
