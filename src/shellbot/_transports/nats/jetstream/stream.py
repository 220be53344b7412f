"""The bus's one JetStream stream.

The stream (``Stream``) is named after ``bus.nats.prefix`` and holds every
channel's subject (``PREFIX.c.>``); it is made on first use with the
``bus.stream.*`` settings. A stream that exists already is used as it is: a
setting that differs is logged, and one that would break a promise (the
subjects, acknowledgements, deduplication) is an error naming it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext, api

from .... import errors
from ...._settings import BusSettings
from .. import errors as mapped
from .._client import OrderedClient

log = logging.getLogger("shellbot.bus")

API_TIMEOUT = 5.0  # seconds for one JetStream API request
DUPLICATE_WINDOW = 120.0  # seconds: a retry within it is stored once (the server's default)


def stream_name(prefix: str) -> str:
    """The stream of the bus under ``prefix``: its tokens joined by '_', upper case
    (stream names take no '.', '*', '>' or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper()


class Stream:
    """Where the bus's messages are stored: found or made once per connection."""

    def __init__(
        self, settings: BusSettings, client: OrderedClient, servers: Callable[[], int]
    ) -> None:
        self.settings = settings
        self.name = stream_name(settings.nats_prefix)
        self.subjects = [settings.nats_prefix + ".c.>"]
        self._client = client
        self._servers = servers  # how many servers the cluster has, as far as we know
        self._ready: asyncio.Future[None] | None = None

    @property
    def jetstream(self) -> JetStreamContext:
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
            except mapped.NO_JETSTREAM_YET as error:
                if time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    continue
                raise mapped.no_jetstream(self.settings, error) from error
        if info is not None:
            self._check(info.config)

    async def _find_or_make_once(self) -> api.StreamInfo | None:
        jetstream = self.jetstream
        try:
            return await jetstream.stream_info(self.name)
        except mapped.NotFound:
            try:
                await jetstream.add_stream(self._config())
                log.info("NATS: made the stream %s for %s", self.name, self.subjects[0])
                return None
            except mapped.UNAVAILABLE:
                raise
            except mapped.APIError as error:
                if error.err_code == mapped.STREAM_NAME_IN_USE:  # made meanwhile elsewhere
                    return await jetstream.stream_info(self.name)
                raise mapped.stream_refused(self.name, error) from error

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
