"""The bus's one JetStream stream, and publishing that knows each message was stored.

The stream (``Stream``) is named after ``bus.nats.prefix`` and holds every
channel's subject (``PREFIX.c.>``); it is made on first use with the
``bus.stream.*`` settings. A stream that exists already is used as it is: a
setting that differs is logged, and one that would break a promise (the
subjects, acknowledgements, deduplication) is an error naming it.

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
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from nats import errors as nats_errors
from nats.js import api
from nats.js import errors as js_errors

from .. import errors
from .._codec import BATCH_SEPARATOR, HEADER
from .._settings import BusSettings, redacted

log = logging.getLogger("shellbot.bus")

ACK_TIMEOUT = 2.0  # seconds without the server's acknowledgement before a run is sent again
IN_FLIGHT = 1024  # runs published and not yet acknowledged, at most, per sender
API_TIMEOUT = 5.0  # seconds for one JetStream API request
DUPLICATE_WINDOW = 120.0  # seconds: a retry within it is stored once (the server's default)
MSG_ID = "Nats-Msg-Id"
STREAM_NAME_IN_USE = 10058  # JetStream's error code

_unpack_header = HEADER.unpack_from

# For the benchmark only (``shellbot.bench``): a list set here before the bus starts
# gets (first sequence number, messages, ``perf_counter()``) for each run the server
# acknowledged, as the acknowledgement is read. None (the default) records nothing.
acknowledgement_times: list[tuple[int, int, float]] | None = None


def stream_name(prefix: str) -> str:
    """The stream of the bus under ``prefix``: its tokens joined by '_', upper case
    (stream names take no '.', '*', '>' or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper()


class Stream:
    """Where the bus's messages are stored: found or made once per connection."""

    def __init__(self, settings: BusSettings, client: Any, servers: Callable[[], int]) -> None:
        self.settings = settings
        self.name = stream_name(settings.nats_prefix)
        self.subjects = [settings.nats_prefix + ".c.>"]
        self._client = client
        self._servers = servers  # how many servers the cluster has, as far as we know
        self._ready: asyncio.Future[None] | None = None

    @property
    def jetstream(self) -> Any:
        return self._client.jetstream(timeout=API_TIMEOUT)

    async def ensure(self) -> None:
        """Finds or makes the stream; raises ``TransportError`` when it cannot be used."""
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self._find_or_make()
            except BaseException as error:
                self._ready.set_exception(error)
                self._ready.exception()  # retrieved: a later call tries again
                raise
            self._ready.set_result(None)
        await asyncio.shield(self._ready)

    async def _find_or_make(self) -> None:
        # A cluster electing its leaders answers nothing for a while: tried again until
        # bus.start_timeout, then said as it is.
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            try:
                info = await self._find_or_make_once()
                break
            except (js_errors.ServiceUnavailableError, nats_errors.TimeoutError) as error:
                if time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    continue
                raise errors.TransportError(
                    f"The NATS server at {redacted(self.settings.address)} gave no JetStream "
                    f"within {self.settings.start_timeout:g} s (bus.start_timeout), which "
                    "durable subscribers and bus.durable need: start nats-server with -js "
                    "(or jetstream {} in its configuration)"
                ) from error
        if info is not None:
            self._check(info.config)

    async def _find_or_make_once(self) -> api.StreamInfo | None:
        jetstream = self.jetstream
        try:
            return await jetstream.stream_info(self.name)
        except js_errors.NotFoundError:
            try:
                await jetstream.add_stream(self._config())
                log.info("NATS: made the stream %s for %s", self.name, self.subjects[0])
                return None
            except js_errors.ServiceUnavailableError:
                raise
            except js_errors.APIError as error:
                if error.err_code == STREAM_NAME_IN_USE:  # made meanwhile by another process
                    return await jetstream.stream_info(self.name)
                raise errors.ConfigurationError(
                    f"The NATS server refused to make the stream {self.name} "
                    f"({error.description}): check bus.stream.*"
                ) from error

    def _config(self) -> api.StreamConfig:
        settings = self.settings
        replicas = settings.stream_replicas or (3 if self._servers() >= 3 else 1)
        return api.StreamConfig(
            name=self.name,
            subjects=self.subjects,
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType(settings.stream_storage),
            num_replicas=replicas,
            max_age=settings.stream_max_age or None,
            max_bytes=settings.stream_max_bytes or None,
            # The server wants it within max_age: a message kept less is stored once anyway.
            duplicate_window=min(DUPLICATE_WINDOW, settings.stream_max_age or DUPLICATE_WINDOW),
        )

    def _check(self, found: api.StreamConfig) -> None:
        """The stream made elsewhere: what would break a promise is an error, the rest
        is logged and left as it is."""

        def broken(setting: str, why: str) -> errors.ConfigurationError:
            return errors.ConfigurationError(
                f"The stream {self.name} exists with {setting} that the bus cannot use ({why}): "
                f"change it with the nats command line, or choose another bus.nats.prefix"
            )

        subjects = found.subjects or []
        if not any(
            subject in (self.subjects[0], self.settings.nats_prefix + ".>", ">")
            for subject in subjects
        ):
            raise broken(f"subjects {subjects}", f"it must hold {self.subjects[0]}")
        retention = _value(found.retention)
        if retention is not None and retention != api.RetentionPolicy.LIMITS.value:
            raise broken(
                f"retention {retention}",
                "a durable subscriber needs every message kept for it: limits",
            )
        if found.no_ack:
            raise broken("no_ack", "publishing needs the server's acknowledgements")
        window = found.duplicate_window or 0.0
        if window and window < self.settings.send_timeout:
            raise broken(
                f"duplicate_window {window:g} s",
                f"a message published again within bus.send_timeout "
                f"({self.settings.send_timeout:g} s) must be stored once",
            )
        wanted = self._config()
        for setting in ("storage", "max_age", "max_bytes", "num_replicas"):
            given = getattr(wanted, setting)
            existing = getattr(found, setting)
            if setting == "num_replicas" and not self.settings.stream_replicas:
                continue  # not asked for: whatever the stream has
            given, existing = _value(given), _value(existing)
            if given is not None and existing not in (given, None) and existing != -1:
                log.warning(
                    "NATS: the stream %s has %s %s, not %s as the settings say: used as it is",
                    self.name,
                    setting,
                    existing,
                    given,
                )


def _value(setting: Any) -> Any:
    """A setting as the server spells it: nats-py gives enums or their strings."""
    return getattr(setting, "value", setting)


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
        self, settings: BusSettings, client: Any, stream: Stream, connected: asyncio.Event
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
        self._client.take(subscription, self._acknowledged, raw=True)
        self._retrying = asyncio.get_running_loop().create_task(self._retry())
        self._inbox = inbox

    async def renew(self) -> None:
        """The connection was made anew: acknowledgements come to the same inbox again."""
        if self._inbox:
            subscription = await self._client.subscribe(self._inbox + ".*")
            self._client.take(subscription, self._acknowledged, raw=True)

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
        with contextlib.suppress(
            nats_errors.OutboundBufferLimitError, nats_errors.ConnectionClosedError
        ):
            await self._client.publish(
                run.subject, run.body, reply=f"{self._inbox}.{token}", headers=run.headers
            )

    def _acknowledged(self, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
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
        if acknowledgement_times is not None:
            acknowledgement_times.append((run.sequence, run.count, time.perf_counter()))
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
