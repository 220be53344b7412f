"""``nats://``: the bus on a NATS server or cluster, which is the hub already running.

The frames are the bus's own (``_codec``): a channel's topic travels as a NATS
subject, the body (sender id, sequence number, JSON) as the payload, so gaps
are counted exactly as on ZeroMQ. The naming rule is in ``Naming``.

One connection per process and address, its asyncio loop in a thread of its
own (``_Connection``). ``put()`` never waits for that loop: the sender appends
frames to a queue and wakes the loop once per burst; the loop publishes what is
queued, joining consecutive messages of one channel into one payload (the same
runs as the ZeroMQ hub makes, split again by the subscriber), so that under a
backlog a NATS message carries many, and a message alone leaves at once. While
no server is connected, frames wait in that queue (up to
``bus.send_high_water_mark``, then ``put()`` waits up to ``bus.send_timeout``).

Readiness is end to end: on a cluster, a subscription reaches the other nodes
after the server that took it answered, so a probe comes back from every node
(``Sender.send_probe``), each through a short connection of its own to that
node, before ``wait_ready()`` says True.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from .. import errors
from .._codec import BATCH_SEPARATOR, CONTROL_BYTE, HEADER, HEADER_SIZE
from .._settings import BusSettings, nats_servers, redacted
from ._inbox import Inbox
from .base import Frames, Hub, HubKind, Receiver, Sender, Transport

try:
    from nats import errors as nats_errors
    from nats.aio.client import Client
except ImportError as missing:  # the optional extra
    raise errors.ConfigurationError(
        "A nats:// bus.address needs the NATS client, nats-py, which is not installed: "
        "install shellbot's nats extra (from its checkout: pip install '.[nats]')"
    ) from missing

log = logging.getLogger("shellbot.bus")

RECONNECT_WAIT = 0.1  # seconds between attempts on one server: a node back is found at once
CONNECT_TIMEOUT = 2.0  # seconds for one attempt on one server
RUN_BYTES = 8 * 1024  # a NATS message joins queued messages of a channel up to this size
PROBE_RETRY = 1.0  # seconds before a node that refused a probe connection is tried again
NAME_CACHE_LIMIT = 100_000  # subjects whose topics are remembered
UNKNOWN_NODES = 1 << 30  # copies needed when a probe cannot prove anything: never that many

_unpack_header = HEADER.unpack_from


# -- naming -----------------------------------------------------------------------------

_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


def encode_token(token: str) -> str:
    """One dot-free piece of a channel as a NATS subject token: ASCII letters, digits,
    ``-`` and ``_`` stay; every other byte of its UTF-8 is ``%XX``; '' is ``%``."""
    if not token:
        return "%"
    if all(character in _SAFE for character in token):
        return token
    return "".join(
        character if character in _SAFE else "".join(f"%{byte:02X}" for byte in character.encode())
        for character in token
    )


def decode_token(token: str) -> str:
    """The piece of a channel that ``token`` encodes; ``ValueError`` when it is not
    exactly what ``encode_token`` writes (a subject of another program)."""
    if token == "%":
        return ""
    if "%" not in token:
        if not token or not all(character in _SAFE for character in token):
            raise ValueError(token)
        return token
    data = bytearray()
    index = 0
    while index < len(token):
        character = token[index]
        if character == "%":
            data.append(int(token[index + 1 : index + 3], 16))  # ValueError when not hex
            if len(token[index + 1 : index + 3]) != 2:
                raise ValueError(token)
            index += 3
        elif character in _SAFE:
            data.append(ord(character))
            index += 1
        else:
            raise ValueError(token)
    piece = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if encode_token(piece) != token:
        raise ValueError(token)
    return piece


class Naming:
    """Topics as NATS subjects, both ways, under one prefix (``bus.nats.prefix``).

    A channel is ``PREFIX.c.`` and its dot-separated pieces, each encoded by
    ``encode_token``: ``votes.alice`` is ``shellbot.c.votes.alice``, ``a b`` is
    ``shellbot.c.a%20b``, ``*`` is ``shellbot.c.%2A``. Dots stay token
    separators, so a pattern (``votes.*``) is matched by the server. Every channel
    is under ``PREFIX.c.>``, which is what ``''`` subscribes to; the bus's own
    signals are under ``PREFIX.s.``.
    """

    def __init__(self, prefix: str) -> None:
        tokens = prefix.split(".")
        if not all(tokens) or any(
            not token.isprintable() or " " in token or token in ("*", ">") for token in tokens
        ):
            raise errors.ConfigurationError(
                f"bus.nats.prefix {prefix!r} is not a NATS subject: dot-separated tokens "
                "without spaces or wildcards, such as 'shellbot' or 'team.bus'"
            )
        self.channels = prefix + ".c."
        self.signals = prefix + ".s."
        self.everything = self.channels + ">"
        self._subjects: dict[bytes, str] = {}
        self._topics: dict[bytes, bytes | None] = {}

    def subject(self, topic: bytes) -> str:
        """The subject of a channel's topic or of a signal's."""
        subject = self._subjects.get(topic)
        if subject is None:
            if topic[:1] == b"\xff":
                subject = self.signals + encode_token(topic[1:].decode("utf-8"))
            else:
                channel = topic[:-1].decode("utf-8")
                subject = self.channels + ".".join(map(encode_token, channel.split(".")))
            if len(self._subjects) >= NAME_CACHE_LIMIT:
                self._subjects.clear()
            self._subjects[topic] = subject
        return subject

    def interest(self, prefix: bytes, pattern: str | None) -> str:
        """The subject (with wildcards) a receiver subscribes to for ``Receiver.subscribe``."""
        if pattern is not None:
            tokens = pattern.split(".")
            return self.channels + ".".join(
                token if token in ("*", ">") else encode_token(token) for token in tokens
            )
        if not prefix:
            return self.everything
        return self.subject(prefix)

    def topic(self, raw_subject: bytes) -> bytes | None:
        """The topic a subject (as the server sent it) names, or None for one the rule
        never writes."""
        try:
            return self._topics[raw_subject]
        except KeyError:
            pass
        topic: bytes | None
        try:
            subject = raw_subject.decode("utf-8")
            if subject.startswith(self.channels):
                pieces = subject[len(self.channels) :].split(".")
                topic = ".".join(map(decode_token, pieces)).encode("utf-8") + b"\xff"
            elif subject.startswith(self.signals):
                topic = b"\xff" + decode_token(subject[len(self.signals) :]).encode("utf-8")
            else:
                topic = None
        except ValueError:
            topic = None
        if len(self._topics) >= NAME_CACHE_LIMIT:
            self._topics.clear()
        self._topics[raw_subject] = topic
        return topic


def _matches(interest: str, subject: str) -> bool:
    """NATS's own rule: ``*`` is one token, a last ``>`` one or more."""
    wanted = interest.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


# -- the connection of a process ----------------------------------------------------------


class _OrderedClient(Client):
    """nats-py's client, handing the messages of the bus's subscriptions over in order.

    nats-py gives each subscription a task and a queue of its own, so messages of
    two subscriptions of one subscriber (two channels, or a channel and a
    pattern) could come out of order; the bus keeps the order of each publisher
    across channels. So the messages of the subscriptions ``take()`` names are
    handed over where the client parses them, one by one, as the server sent
    them (this uses the client's ``_process_msg`` and ``Subscription._id``,
    hence the range of nats-py versions the extra admits).
    """

    def __init__(self) -> None:
        super().__init__()
        self._takers: dict[int, Callable[[bytes, bytes], None]] = {}

    def take(self, subscription: Any, deliver: Callable[[bytes, bytes], None]) -> None:
        """From now on, ``deliver(subject, payload)`` gets the messages of ``subscription``."""
        sid = subscription._id
        self._takers[sid] = deliver
        queue = subscription._pending_queue  # anything that came before, in order
        while not queue.empty():
            message = queue.get_nowait()
            deliver(message.subject.encode(), message.data)

    def forget(self, subscription: Any) -> None:
        self._takers.pop(subscription._id, None)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> None:
        deliver = self._takers.get(sid)
        if deliver is None:
            await super()._process_msg(sid, subject, reply, data, headers)
        else:
            deliver(subject, data)


def _server_key(url: Any) -> str:
    """host:port of a server URL (a string or a parsed one), as the client names it."""
    parts = urlsplit(url) if isinstance(url, str) else url
    return f"{parts.hostname}:{parts.port or 4222}"


class _Connection:
    """One NATS client of this process, driven by an event loop in a thread of its own."""

    def __init__(self, settings: BusSettings, naming: Naming) -> None:
        self.settings = settings
        self.naming = naming
        self.servers = nats_servers(settings.address)
        self._probe_options = _connect_options(settings, self.servers)  # raises before a thread
        self.loop = asyncio.new_event_loop()
        self.client = _OrderedClient()
        self.failure: errors.TransportError | None = None  # the bus refused us: final
        self.last_error: str | None = None  # why the last attempt failed, for messages
        self.max_payload = 0  # the server's, once connected
        self._on_connect: list[Callable[[], None]] = []
        self._probes: dict[str, Client] = {}  # other servers' probe connections
        self._probe_ids: dict[str, int] = {}
        self._probes_failed: dict[str, float] = {}  # server -> when its probe connection failed
        self._probes_connecting: set[str] = set()
        self._known = frozenset(_server_key(url) for url in self.servers)
        self._here: str | None = None  # the server this connection is on
        self.connected_once: asyncio.Event  # made in the loop, set at the first connection
        self._thread = threading.Thread(target=self.loop.run_forever, name="shellbot-nats")
        self._thread.daemon = True
        self._thread.start()
        self.call_soon(self._start_connecting)

    # -- for other threads
    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
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
            closed_cb=self._nothing,
        )
        try:
            await self.client.connect(self.servers, **options)
        except asyncio.CancelledError:
            return
        except Exception as error:
            # nats-py retries what the network does; what escapes its connect() (a file
            # it cannot read, an error while it cleans up a failed attempt) ends it.
            self._fail(
                self._no_certificate()
                or f"The NATS client gave up connecting to {redacted(self.settings.address)} "
                f"({type(error).__name__}: {error}): check bus.nats.credentials, "
                "bus.nats.nkey_seed and bus.nats.tls_*",
                error,
            )
            return
        await self._connected()

    async def _nothing(self) -> None:
        pass

    async def _disconnected(self) -> None:
        self._here = None

    async def _discovered(self) -> None:
        """The servers configured and those the cluster announced, by host:port."""
        self._known = frozenset(
            {_server_key(url) for url in self.client.servers}
            | {_server_key(url) for url in self.servers}
        )

    async def _connected(self) -> None:
        self.connected_once.set()
        self.max_payload = self.client.max_payload
        self.last_error = None
        await self._discovered()
        here = self.client.connected_url
        self._here = None if here is None else _server_key(here)
        for callback in self._on_connect:
            callback()

    async def _error(self, error: Exception) -> None:
        self.last_error = str(error) or type(error).__name__
        address = redacted(self.settings.address)
        if isinstance(error, nats_errors.AuthorizationError) or "uthorization" in str(error):
            settings = self.settings
            given = "@" in settings.address or settings.nats_credentials or settings.nats_nkey_seed
            self._fail(
                f"The NATS server at {address} refused this program's credentials "
                "(authorization violation): check the user:password@ or token@ of "
                "bus.address, or bus.nats.credentials / bus.nats.nkey_seed"
                if given
                else f"The NATS server at {address} requires credentials, and this program "
                "gave none (authorization violation): put user:password@ or token@ in "
                "bus.address, or set bus.nats.credentials / bus.nats.nkey_seed",
                error,
            )
        elif isinstance(error, ssl.SSLCertVerificationError):
            # As final as refused credentials: trying again meets the same certificate.
            self._fail(
                f"The NATS server at {address} presented a TLS certificate this program "
                f"does not trust ({error.verify_message}): set bus.nats.tls_ca to the "
                "certificate of the authority that signed it",
                error,
            )
        elif (no_certificate := self._no_certificate()) is not None:
            self._fail(no_certificate, error)  # the server hangs up at each attempt
        elif isinstance(error, nats_errors.SlowConsumerError):
            pass  # counted where it shows: as gaps in the subscriber's sequence numbers
        else:
            log.debug("NATS: %s", self.last_error)

    def _no_certificate(self) -> str | None:
        """Why the server hangs up, when it asks for a client certificate (its INFO says
        so before the TLS handshake) and this program has none."""
        info = getattr(self.client, "_server_info", None) or {}
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
            url = _with_credentials(self.servers[0], key)
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


def _connect_options(settings: BusSettings, servers: list[str]) -> dict[str, Any]:
    """What every connection of this address passes to nats-py."""
    options: dict[str, Any] = {
        "name": "shellbot",
        "connect_timeout": min(CONNECT_TIMEOUT, settings.start_timeout),
    }
    # nats-py reads these files inside connect(), where a missing one would only show
    # as a server that never answers: they are checked here, where the error is seen.
    for key in ("credentials", "nkey_seed", "tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, f"nats_{key}")
        if path and not os.access(path, os.R_OK):
            raise errors.ConfigurationError(
                f"bus.nats.{key} names {path!r}, which is not a file this program can read"
            )
    if settings.nats_tls_key and not settings.nats_tls_cert:
        raise errors.ConfigurationError(
            "bus.nats.tls_key is the key of bus.nats.tls_cert, which is not set: set both"
        )
    if settings.nats_credentials or settings.nats_nkey_seed:
        try:
            import nkeys  # noqa: F401 - nats-py signs the server's nonce with it
        except ImportError as missing:
            raise errors.ConfigurationError(
                "bus.nats.credentials and bus.nats.nkey_seed need the nkeys package, which "
                "is not installed: install shellbot's nats extra again (pip install "
                "'.[nats]' from its checkout), which brings it"
            ) from missing
    if settings.nats_credentials:
        options["user_credentials"] = settings.nats_credentials
    if settings.nats_nkey_seed:
        options["nkeys_seed"] = settings.nats_nkey_seed
    if settings.nats_tls_ca or settings.nats_tls_cert:
        try:
            context = ssl.create_default_context(cafile=settings.nats_tls_ca or None)
            if settings.nats_tls_cert:
                context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key or None)
        except (OSError, ssl.SSLError) as error:
            raise errors.ConfigurationError(
                f"bus.nats.tls_ca / tls_cert / tls_key: cannot load them ({error})"
            ) from error
        options["tls"] = context
    return options


def _with_credentials(template: str, key: str) -> str:
    """The URL of server ``key`` (host:port) with the credentials of ``template``."""
    parts = urlsplit(template)
    credentials = parts.netloc.rpartition("@")[0]
    return f"nats://{credentials + '@' if credentials else ''}{key}"


# -- sender and receiver ------------------------------------------------------------------


class NatsSender(Sender):
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._settings = connection.settings
        self._naming = connection.naming
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._limit = max(1, self._settings.send_high_water_mark)
        self._scheduled = False  # a wake of the loop is on its way
        self._room = threading.Condition(threading.Lock())
        self._waiting_for_room = False
        self._closed = False
        self._wake: asyncio.Event | None = None
        connection.call_soon(self._start)

    # -- in the caller's thread
    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        for topic, body in messages:
            self.send_one(topic, body)

    def send_one(self, topic: bytes, body: bytes) -> None:
        connection = self._connection
        if connection.failure is not None:
            raise connection.failure
        if connection.max_payload and len(body) > connection.max_payload:
            raise errors.MessageTooLarge(
                f"The message takes {len(body)} bytes with its header, over the NATS "
                f"server's max_payload ({connection.max_payload}): split it, or raise "
                "max_payload in the server's configuration"
            )
        queue = self._queue
        if len(queue) >= self._limit:
            self._wait_for_room()
        queue.append((topic, body))
        # The loop clears the flag before it takes the queue: a frame appended after
        # its last look always finds the flag down, and wakes it again.
        if not self._scheduled:
            self._scheduled = True
            connection.call_soon(self._kick)

    def send_probe(self, topic: bytes, body: bytes) -> int:
        if len(self._queue) >= self._limit:
            # Cut off with a full queue: a probe would wait bus.send_timeout for room and
            # raise, past the caller's own timeout; nothing leaves, so nothing is proven.
            self._connection.check()
            return UNKNOWN_NODES
        self.send_one(topic, body)
        return 1 + self._connection.probe_elsewhere(self._naming.subject(topic))

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self._settings.send_timeout
        with self._room:
            while len(self._queue) >= self._limit:
                self._connection.check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.TimeoutError(
                        f"No NATS server took messages at {redacted(self._settings.address)} "
                        "before "
                        f"bus.send_timeout ({self._settings.send_timeout:g} s), with "
                        f"{len(self._queue)} waiting: check that nats-server runs there"
                    )
                self._waiting_for_room = True
                self._room.wait(min(remaining, 0.1))

    def close(self, linger: float) -> None:
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        try:
            sent = connection.run(self._flush(linger), linger + 1.0)
        except Exception:
            sent = False
        # The bus's own signals (probes, pills) left behind matter to no one.
        left = sum(1 for topic, _ in self._queue if topic[0] != CONTROL_BYTE)
        if not sent and left:
            why = (
                f"no NATS server took them within bus.linger ({linger:g} s)"
                if connection.failure is None
                else str(connection.failure)
            )
            log.warning(
                "%d messages put on %s were not sent: %s",
                left,
                redacted(self._settings.address),
                why,
            )

    # -- in the loop
    def _start(self) -> None:
        self._wake = asyncio.Event()
        self._connection.loop.create_task(self._pump())
        self._connection.when_connected(self._kick)

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _pump(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            await wake.wait()
            wake.clear()
            self._scheduled = False
            await self._publish_queued()

    async def _publish_queued(self) -> None:
        """Publishes what is queued, while connected; consecutive messages of one
        sender on one channel, numbered one after the other, leave as one payload."""
        client = self._connection.client
        queue = self._queue
        subject_of = self._naming.subject
        publish = client.publish
        limit = HEADER_SIZE + min(RUN_BYTES, self._settings.max_message_size)
        if client.max_payload:  # a run is one NATS message: the server's limit holds too
            limit = min(limit, client.max_payload)
        taken = 0
        try:
            while queue and client.is_connected:
                topic, body = queue.popleft()
                taken += 1
                if queue and topic[0] != CONTROL_BYTE:
                    identity, sequence = _unpack_header(body)
                    parts: list[bytes] | None = None
                    size = len(body)
                    while queue:
                        next_topic, next_body = queue[0]
                        if (
                            next_topic != topic
                            or size + len(next_body) - HEADER_SIZE + 1 > limit
                            or _unpack_header(next_body) != (identity, sequence + 1)
                        ):
                            break
                        queue.popleft()
                        taken += 1
                        if parts is None:
                            parts = [body]
                        parts.append(next_body[HEADER_SIZE:])
                        sequence += 1
                        size += len(next_body) - HEADER_SIZE + 1
                    if parts is not None:
                        body = BATCH_SEPARATOR.join(parts)
                try:
                    await publish(subject_of(topic), body)
                except nats_errors.MaxPayloadError as error:
                    # Put before the server's max_payload was known: this one alone is lost.
                    log.warning("NATS: a message could not be published (%s)", error)
                if taken >= 4096:  # let the loop read and ping between long bursts
                    taken = 0
                    self._make_room()
                    await asyncio.sleep(0)
        except nats_errors.OutboundBufferLimitError:
            pass  # disconnected meanwhile: the reconnection wakes us again
        except nats_errors.ConnectionClosedError as error:
            log.warning("NATS: a message could not be published (%s)", error)
        finally:
            self._make_room()

    def _make_room(self) -> None:
        if self._waiting_for_room:
            with self._room:
                self._waiting_for_room = False
                self._room.notify_all()

    async def _flush(self, timeout: float) -> bool:
        """Publishes everything queued and waits for the server's answer, within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client = self._connection.client
        while loop.time() < deadline and self._connection.failure is None:
            if client.is_connected:
                await self._publish_queued()
                if not self._queue:
                    with contextlib.suppress(Exception):
                        await client.flush(max(1, round(deadline - loop.time())))  # whole seconds
                        return True
            await asyncio.sleep(0.01)
        return not self._queue


class NatsReceiver(Receiver):
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._naming = connection.naming
        self._inbox = Inbox(connection.settings.receive_high_water_mark)
        self._interests: dict[str, int] = {}  # subject -> subscriptions asked (caller's thread)
        # In the loop: the live subscriptions, in the order asked, and for a subject that
        # more than one matches, the subscription that delivers it (NATS sends once per
        # matching subscription; ZeroMQ, and so the bus, once per receiver).
        self._subscriptions: dict[str, Any] = {}
        self._deliverer: dict[bytes, str] = {}
        # Only a wildcard interest matches a subject besides its own: without one, every
        # subscription delivers what it gets, and a subscriber of 10,000 channels does
        # not scan them all for each new subject. Each interest's rank in the order asked.
        self._wildcards: list[str] = []
        self._rank: dict[str, int] = {}
        self._asked = 0
        self._closed = False

    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        subject = self._naming.interest(prefix, pattern)
        count = self._interests.get(subject, 0)
        self._interests[subject] = count + 1
        if count == 0:
            self._connection.call_soon(self._change, subject, True)

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        subject = self._naming.interest(prefix, pattern)
        count = self._interests.get(subject, 0)
        if count <= 1:
            self._interests.pop(subject, None)
            if count == 1:
                self._connection.call_soon(self._change, subject, False)
        else:
            self._interests[subject] = count - 1

    def receive(self, timeout: float | None) -> Frames | None:
        self._check()
        return self._inbox.receive(timeout)

    def receive_more(self) -> Iterator[Frames]:
        return self._inbox.receive_more()

    async def wait_async(self, timeout: float | None) -> bool:
        self._check()
        return await self._inbox.wait_async(timeout)

    def interrupt(self) -> None:
        self._inbox.interrupt()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.close()
        subjects = list(self._interests)
        self._interests.clear()
        for subject in subjects:
            self._connection.call_soon(self._change, subject, False)

    def _check(self) -> None:
        if self._closed:
            raise errors.ClosedError("The subscriber was closed; subscribe again to go on")
        self._connection.check()

    # -- in the loop: changes run one after the other, in the order they were asked
    def _change(self, subject: str, subscribing: bool) -> None:
        self._deliverer.clear()
        wildcard = any(token in ("*", ">") for token in subject.split("."))
        if subscribing:
            self._subscriptions[subject] = None  # taken: messages may come before the sid
            self._asked += 1
            self._rank[subject] = self._asked
            if wildcard:
                self._wildcards.append(subject)
            self._connection.loop.create_task(self._subscribe(subject))
        else:
            self._rank.pop(subject, None)
            if wildcard and subject in self._wildcards:
                self._wildcards.remove(subject)
            subscription = self._subscriptions.pop(subject, None)
            if subscription is not None:
                self._connection.client.forget(subscription)
                self._connection.loop.create_task(_unsubscribe(subscription))

    async def _subscribe(self, interest: str) -> None:
        client = self._connection.client
        # Waiting tasks wake in the order they began to wait: the SUBs keep their order.
        await self._connection.connected_once.wait()
        try:
            subscription = await client.subscribe(interest)
        except Exception:
            if self._connection.failure is None:
                raise
            return  # the bus refused this program: receive() says so
        if interest in self._subscriptions and self._subscriptions[interest] is None:
            self._subscriptions[interest] = subscription
            client.take(subscription, functools.partial(self._deliver, interest))
        else:  # unsubscribed meanwhile
            await _unsubscribe(subscription)

    def _deliver(self, interest: str, subject: bytes, data: bytes) -> None:
        if self._wildcards and self._delivered_by(subject) != interest:
            return  # another subscription of this receiver delivers this one
        topic = self._naming.topic(subject)
        # A subject the naming rule never writes comes as one frame: dropped and counted.
        self._inbox.push([data] if topic is None else [topic, data])

    def _delivered_by(self, subject: bytes) -> str | None:
        """The first interest, in the order asked, that matches ``subject``."""
        interest = self._deliverer.get(subject)
        if interest is None:
            name = subject.decode("utf-8", "replace")
            matching = [i for i in self._wildcards if _matches(i, name)]
            if name in self._rank:  # its own exact interest
                matching.append(name)
            interest = min(matching, key=self._rank.__getitem__, default=None)
            if interest is not None:
                if len(self._deliverer) >= NAME_CACHE_LIMIT:
                    self._deliverer.clear()
                self._deliverer[subject] = interest
        return interest


async def _unsubscribe(subscription: Any) -> None:
    with contextlib.suppress(Exception):  # gone with a closed connection
        await subscription.unsubscribe()


class NatsTransport(Transport):
    hub_kind = HubKind.BROKER
    broker_name = "a NATS server"

    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.naming = Naming(settings.nats_prefix)
        self._connection: _Connection | None = None
        self._lock = threading.Lock()

    @property
    def connection(self) -> _Connection:
        """This process's connection, made on first use."""
        with self._lock:
            if self._connection is None:
                self._connection = _Connection(self.settings, self.naming)
            return self._connection

    def open_sender(self) -> Sender:
        return NatsSender(self.connection)

    def open_receiver(self) -> Receiver:
        return NatsReceiver(self.connection)

    def open_hub(self) -> Hub | None:
        return None  # the server is the hub

    def unreachable(self) -> str:
        # What this process's connection learnt, if it has one: the message makes none.
        connection = self._connection
        if connection is not None and connection.failure is not None:
            return str(connection.failure)
        last = connection.last_error if connection is not None else None
        why = f" (last: {last})" if last else ""
        return (
            f"No NATS server answered at {redacted(self.settings.address)} within "
            f"{self.settings.start_timeout:g} s (bus.start_timeout){why}: check bus.address, "
            "and that nats-server runs there"
        )


__all__ = ["Naming", "NatsTransport", "decode_token", "encode_token"]
