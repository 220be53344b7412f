"""Publishing that knows each message was stored in the bus's stream.

``StoredPublishing`` publishes a sender's runs with a reply subject and a
``Nats-Msg-Id`` made of the sender id, the channel and the run's first
sequence number, keeps each run until the server acknowledged it, and
publishes it again, with the same id, when no acknowledgement came: the
server stores one copy. A run still unacknowledged ``bus.send_timeout``
seconds after it was first published is counted ``not_stored``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

import orjson

from ...._codec import BATCH_SEPARATOR, HEADER
from ...._settings import BusSettings
from .. import errors as mapped
from .._client import Headers, OrderedClient
from .stream import Stream

log = logging.getLogger("shellbot.bus")

ACK_TIMEOUT = 2.0  # seconds without the server's acknowledgement before a run is sent again
IN_FLIGHT = 1024  # runs published and not yet acknowledged, at most, per sender
MSG_ID = "Nats-Msg-Id"

_unpack_header = HEADER.unpack_from

# For the benchmark only (``record_acknowledgements``).
_acknowledgement_times: list[tuple[int, int, float]] | None = None


def record_acknowledgements(into: list[tuple[int, int, float]] | None) -> None:
    """For the benchmark (``shellbot.bench``): from now on, ``into`` gets (first sequence
    number, messages, ``perf_counter()``) for each run the server acknowledged, as the
    acknowledgement is read; None (the default) records nothing. Set before the bus starts."""
    global _acknowledgement_times
    _acknowledgement_times = into


class _Run:
    """One NATS message of stored publishing: consecutive messages of one sender on
    one channel, and what it takes to publish it again."""

    __slots__ = ("attempts", "body", "count", "deadline", "headers", "sent", "sequence", "subject")

    def __init__(
        self, subject: str, body: bytes, count: int, deadline: float, carried: bytes
    ) -> None:
        self.subject = subject
        self.body = carried + body  # a long channel's topic first (see Naming)
        self.count = count
        identity, sequence = _unpack_header(body)
        self.sequence = sequence
        channel = hashlib.blake2b(subject.encode(), digest_size=6).hexdigest()
        self.headers = {MSG_ID: f"{identity:016x}-{channel}-{sequence}"}
        self.deadline = deadline
        self.sent = 0.0
        self.attempts = 0


class StoredPublishing:
    """The acknowledgements of one sender's runs, in its connection's loop."""

    def __init__(
        self,
        settings: BusSettings,
        client: OrderedClient,
        stream: Stream,
        connected: asyncio.Event,
    ) -> None:
        self._connected = connected
        self._settings = settings
        self._client = client
        self._stream = stream
        self._inbox = ""
        self._runs: dict[int, _Run] = {}  # reply token -> run, in the order published
        self._next = 0
        self._room = asyncio.Event()
        self._room.set()
        self._settled = asyncio.Event()
        self._settled.set()
        self._retrying: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[None] | None = None
        self._on_the_way = 0  # messages of runs being published, not yet in _runs
        self.counters = {"stored": 0, "retried": 0, "duplicates": 0, "not_stored": 0}

    @property
    def unconfirmed(self) -> int:
        """Messages published and not yet acknowledged (nor given up), or on their way."""
        # Read from other threads (stats) while the loop's changes it: a copy, taken at once.
        return sum(run.count for run in list(self._runs.values())) + self._on_the_way

    async def open(self) -> None:
        """Finds the stream and listens for acknowledgements, once: begun as the sender
        starts, so that the first put() does not wait for it."""
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
        await asyncio.shield(self._opening)

    async def _open(self) -> None:
        try:
            await self._connected.wait()  # a request before it would be lost
            await self._stream.ensure()
        except BaseException:
            self._opening = None  # a later publish tries again, and raises what it meets
            raise
        inbox = self._client.new_inbox()
        subscription = await self._client.subscribe(inbox + ".*")
        self._client.take_raw(subscription, self._acknowledged)
        self._retrying = asyncio.get_running_loop().create_task(self._retry())
        self._inbox = inbox

    async def renew(self) -> None:
        """The connection was made anew: acknowledgements come to the same inbox again."""
        if self._inbox:
            subscription = await self._client.subscribe(self._inbox + ".*")
            self._client.take_raw(subscription, self._acknowledged)

    async def publish(self, subject: str, body: bytes, carried: bytes = b"") -> None:
        """Publishes one run and keeps it until acknowledged; waits while IN_FLIGHT are out.
        ``carried``: the topic a long channel's message carries before its body."""
        count = body.count(BATCH_SEPARATOR, HEADER.size) + 1 if len(body) > HEADER.size else 1
        # Taken from the sender's queue, not yet kept here: unconfirmed all the same, so a
        # flush that finds the queue empty still waits for it.
        self._on_the_way += count
        self._settled.clear()
        try:
            if not self._inbox:
                await self.open()
            while len(self._runs) >= IN_FLIGHT:
                self._room.clear()
                await self._room.wait()
            run = _Run(
                subject, body, count, time.monotonic() + self._settings.send_timeout, carried
            )
            self._next += 1
            token = self._next
            self._runs[token] = run
        finally:
            self._on_the_way -= count
            self._make_room()
        await self._send(token, run)

    async def _send(self, token: int, run: _Run) -> None:
        run.sent = time.monotonic()
        run.attempts += 1
        # Not sent (disconnected): kept, and sent again once connected.
        with contextlib.suppress(*mapped.NOT_SENT):
            await self._client.publish(
                run.subject, run.body, reply=f"{self._inbox}.{token}", headers=run.headers
            )

    def _acknowledged(self, subject: bytes, reply: bytes, data: bytes, headers: Headers) -> None:
        token = int(subject.rpartition(b".")[2] or 0)
        run = self._runs.get(token)
        if run is None:
            return  # acknowledged already, or given up
        if headers and headers.get("Status") == "503":
            return  # no stream answered (yet): the retry publishes it again
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if "error" in answer or "seq" not in answer:
            return  # refused for now (a cluster without a leader): retried
        del self._runs[token]
        if _acknowledgement_times is not None:
            _acknowledgement_times.append((run.sequence, run.count, time.perf_counter()))
        self.counters["stored"] += run.count
        if answer.get("duplicate"):
            self.counters["duplicates"] += run.count
        self._make_room()

    async def _retry(self) -> None:
        """Publishes again, with the same id, each run that waited ACK_TIMEOUT in vain."""
        while True:
            await asyncio.sleep(ACK_TIMEOUT / 4)
            now = time.monotonic()
            for token, run in list(self._runs.items()):
                if now >= run.deadline:
                    del self._runs[token]
                    self.counters["not_stored"] += run.count
                    log.warning(
                        "NATS: %d messages published on %s were not stored within "
                        "bus.send_timeout (%g s)",
                        run.count,
                        run.subject,
                        self._settings.send_timeout,
                    )
                elif now - run.sent >= ACK_TIMEOUT and self._client.is_connected:
                    self.counters["retried"] += run.count
                    await self._send(token, run)
            self._make_room()

    def _make_room(self) -> None:
        if len(self._runs) < IN_FLIGHT:
            self._room.set()
        if not self._runs and not self._on_the_way:
            self._settled.set()

    async def settled(self, timeout: float) -> bool:
        """Waits until every run published was acknowledged or given up."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
