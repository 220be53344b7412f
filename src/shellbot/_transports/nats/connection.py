"""The one NATS connection of a process: nats-py's client in an event loop of its own.

Also what only a connection knows: whether the bus refused this program (for
good), the server's ``max_payload``, the servers of the cluster, and the
probe connections through which every other node echoes a readiness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

# The package (__init__), which imports this module, has checked that nats-py is installed.
from nats.aio.client import Client

from ... import errors
from ..._codec import HEADER
from ..._settings import BusSettings, nats_servers, redacted
from . import errors as mapped
from ._client import OrderedClient
from .jetstream.stream import Stream
from .naming import Naming
from .options import CONNECT_TIMEOUT, connect_options, server_key, with_credentials

log = logging.getLogger("shellbot.bus")

T = TypeVar("T")

RECONNECT_WAIT = 0.1  # seconds between attempts on one server: a node back is found at once
PROBE_RETRY = 1.0  # seconds before a node that refused a probe connection is tried again
CLOSED_WAIT_MAX = 5.0  # seconds, at most, before connecting anew a client closed again soon
UNKNOWN_NODES = 1 << 30  # copies needed when a probe cannot prove anything: never that many


class _Connection:
    """One NATS client of this process, driven by an event loop in a thread of its own."""

    def __init__(self, settings: BusSettings, naming: Naming) -> None:
        self.settings = settings
        self.naming = naming
        self.servers = nats_servers(settings.address)
        self._probe_options = connect_options(settings, self.servers)  # raises before a thread
        self.loop = asyncio.new_event_loop()
        self.client = OrderedClient()
        self.failure: errors.TransportError | None = None  # the bus refused us: final
        self.last_error: str | None = None  # why the last attempt failed, for messages
        self.last_closed: str | None = None  # why the server last closed the connection
        self.max_payload = 0  # the server's, once connected
        self.generation = 0  # connections made so far (see Receiver.generation)
        self._on_connect: list[Callable[[], None]] = []
        # Told, in the loop, that the client was closed for good (the server's -ERR, which
        # nats-py answers by closing) and is connecting anew: each party reports it once.
        self._on_closed: dict[int, Callable[[errors.TransportError], None]] = {}
        self._on_renewed: dict[int, Callable[[], None]] = {}
        self._renewed_at = -CLOSED_WAIT_MAX  # when the client was last connected anew
        self._closed_wait = RECONNECT_WAIT
        self._probes: dict[str, Client] = {}  # other servers' probe connections
        self._probe_ids: dict[str, int] = {}
        self._probes_failed: dict[str, float] = {}  # server -> when its probe connection failed
        self._probes_connecting: set[str] = set()
        self._known = frozenset(server_key(url) for url in self.servers)
        self._here: str | None = None  # the server this connection is on
        self.connected_once: asyncio.Event  # made in the loop, set at the first connection
        self.stream = Stream(settings, self.client, lambda: len(self._known))  # JetStream's
        self._thread = threading.Thread(target=self.loop.run_forever, name="shellbot-nats")
        self._thread.daemon = True
        self._thread.start()
        self.call_soon(self._start_connecting)

    # -- for other threads
    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Runs ``coroutine`` on the loop and waits at most ``timeout`` for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    # -- in the loop
    def when_connected(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` in the loop at every (re)connection."""
        self._on_connect.append(callback)
        if self.client.is_connected:
            callback()

    def when_closed(
        self,
        party: object,
        closed: Callable[[errors.TransportError], None],
        renewed: Callable[[], None] | None = None,
    ) -> None:
        """Calls ``closed(error)`` in the loop when the client was closed for good, and
        ``renewed()`` once it is connected anew, subscriptions gone; until ``forget``."""
        self._on_closed[id(party)] = closed
        if renewed is not None:
            self._on_renewed[id(party)] = renewed

    def forget(self, party: object) -> None:
        self._on_closed.pop(id(party), None)
        self._on_renewed.pop(id(party), None)

    def _start_connecting(self) -> None:
        # nats-py keeps what is written before the first connection in a buffer that
        # connecting replaces: subscriptions wait for this (publishing waits anyway).
        self.connected_once = asyncio.Event()
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        options = dict(self._probe_options)
        options.update(
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # forever: start() and waits are bounded above
            reconnect_time_wait=RECONNECT_WAIT,
            error_cb=self._error,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._connected,
            discovered_server_cb=self._discovered,
            closed_cb=self._closed,
        )
        try:
            await self.client.connect(self.servers, **options)
        except asyncio.CancelledError:
            return
        except Exception as error:
            # nats-py retries what the network does; what escapes its connect() (a file
            # it cannot read, an error while it cleans up a failed attempt) ends it.
            self._fail(
                self._no_certificate() or mapped.gave_up_connecting(self.settings, error), error
            )
            return
        await self._connected()

    async def _closed(self) -> None:
        """nats-py closed the client for good: on the server's -ERR (a limit of the
        server's passed, as a protocol line over its max_control_line), or having given
        up. Every party says so, with the server's reason, at its next call; the
        client connects anew, unless this program was refused (``_fail``)."""
        if self.failure is not None:
            return
        if mapped.is_authorization(self.client.last_error):
            await self._error(self.client.last_error)  # refused: final, as at connecting
            return
        reason = str(self.client.last_error or self.last_error or "no reason given")
        self.last_closed = reason
        error = mapped.connection_closed(self.settings, reason, self.client.last_error)
        log.warning("NATS: %s", error)
        for closed in list(self._on_closed.values()):
            closed(error)
        self.loop.create_task(self._connect_anew())

    async def _connect_anew(self) -> None:
        # Closed again soon after the last time (a subscription the server refuses at
        # every connection): each wait doubles, up to CLOSED_WAIT_MAX.
        now = time.monotonic()
        soon = now - self._renewed_at < CLOSED_WAIT_MAX
        self._closed_wait = min(CLOSED_WAIT_MAX, self._closed_wait * 2) if soon else RECONNECT_WAIT
        await asyncio.sleep(self._closed_wait)
        await self._connect()
        self._renewed_at = time.monotonic()
        if self.client.is_connected:
            for renewed in list(self._on_renewed.values()):
                renewed()

    async def _disconnected(self) -> None:
        self._here = None

    async def _discovered(self) -> None:
        """The servers configured and those the cluster announced, by host:port."""
        self._known = frozenset(
            {server_key(url) for url in self.client.servers}
            | {server_key(url) for url in self.servers}
        )

    async def _connected(self) -> None:
        self.generation += 1
        self.connected_once.set()
        self.max_payload = self.client.max_payload
        self.last_error = None
        await self._discovered()
        here = self.client.connected_url
        self._here = None if here is None else server_key(here)
        for callback in self._on_connect:
            callback()

    async def _error(self, error: Exception) -> None:
        self.last_error = str(error) or type(error).__name__
        refused = mapped.connection_refused(self.settings, error)
        if refused is not None:
            self._fail(str(refused), error)
        elif (no_certificate := self._no_certificate()) is not None:
            self._fail(no_certificate, error)  # the server hangs up at each attempt
        elif isinstance(error, mapped.SlowConsumer):
            pass  # counted where it shows: as gaps in the subscriber's sequence numbers
        else:
            log.debug("NATS: %s", self.last_error)

    def _no_certificate(self) -> str | None:
        """Why the server hangs up, when it asks for a client certificate (its INFO says
        so before the TLS handshake) and this program has none."""
        info = self.client.server_info()
        if self.settings.nats_tls_cert or not info.get("tls_verify"):
            return None
        return (
            f"The NATS server at {redacted(self.settings.address)} asks for a TLS client "
            "certificate, and this program has none: set bus.nats.tls_cert and bus.nats.tls_key"
        )

    def _fail(self, message: str, cause: Exception) -> None:
        """The bus refused this program for good: every later call raises ``message``."""
        if self.failure is None:
            self.failure = errors.TransportError(message)
            self.failure.__cause__ = cause
        self.loop.create_task(self._close_refused())

    async def _close_refused(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()

    # -- probes from every node (see Sender.send_probe)
    def probe_elsewhere(self, subject: str) -> int:
        """From any thread: publishes ``subject`` from each other server of the cluster
        (in the loop, soon); returns on how many servers that is tried now, or
        UNKNOWN_NODES while this connection is not connected."""
        now = time.monotonic()
        known, here = self._known, self._here  # kept by the loop: one consistent read here
        if here is None:
            # Not connected yet (or reconnecting): which node will hold the subscriptions,
            # and so which others must echo, is not known yet; no count of copies proves
            # readiness now. The next probe, once connected, counts again.
            return UNKNOWN_NODES
        others = [
            key
            for key in known
            if key != here and now - self._probes_failed.get(key, -PROBE_RETRY) >= PROBE_RETRY
        ]
        self.call_soon(self._probe, subject, others)
        return len(others)

    def _probe(self, subject: str, servers: list[str]) -> None:
        for key in servers:
            client = self._probes.get(key)
            if client is not None and client.is_connected:
                self.loop.create_task(self._publish_probe(client, key, subject))
            elif key not in self._probes_connecting:
                self._probes_connecting.add(key)
                self.loop.create_task(self._probe_connect(key, subject))

    async def _probe_connect(self, key: str, subject: str) -> None:
        client = Client()
        try:
            url = with_credentials(self.servers[0], key)
            await client.connect(
                [url],
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=self._nothing_with,
                **self._probe_options,
            )
        except Exception:
            self._probes_failed[key] = time.monotonic()
            with contextlib.suppress(Exception):
                await client.close()
            return
        finally:
            self._probes_connecting.discard(key)
        old = self._probes.pop(key, None)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self._probes[key] = client
        await self._publish_probe(client, key, subject)

    async def _nothing_with(self, error: Exception) -> None:
        pass

    async def _publish_probe(self, client: Client, key: str, subject: str) -> None:
        identity = self._probe_ids.setdefault(key, len(self._probe_ids) + 1)
        try:
            await client.publish(subject, HEADER.pack(identity, 0))
            await client.flush(int(CONNECT_TIMEOUT))
        except Exception:
            self._probes_failed[key] = time.monotonic()
            self._probes.pop(key, None)
            with contextlib.suppress(Exception):
                await client.close()
