"""The bus settings, read from the context once, when an object is made."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from ._codec import DEFAULT_MAX_MESSAGE_SIZE
from .context import Context
from .errors import ConfigurationError

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
SCHEMES = ("tcp", "ipc", "inproc", "memory", "nats")
_NUMBER_TYPES: dict[str, type[int] | type[float]] = {"int": int, "float": float}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
STORAGES = ("file", "memory")

log = logging.getLogger("shellbot.bus")
_warned: set[str] = set()  # unknown keys already warned of, once per process


@dataclass(frozen=True)
class BusSettings:
    """What a transport needs to know; frozen, so it can key a per-process cache."""

    address: str = DEFAULT_ADDRESS
    inbound: str | None = None  # the hub's publisher side; derived from address when None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    send_high_water_mark: int = 100_000  # messages a publisher may hold while the hub is away
    receive_high_water_mark: int = 100_000  # frames (messages or batches) a subscriber queues
    send_timeout: float = 30.0  # how long put() waits when the hub is away and the queue is full
    linger: float = 5.0  # how long queued messages may take to leave at exit
    drain_timeout: float = 2.0  # how long a stopping hub forwards what is still arriving
    start_timeout: float = 10.0  # how long start() waits to hold or reach a hub
    # nats:// only, read from bus.nats.* (the metadata names the key under bus.)
    nats_prefix: str = field(default="shellbot", metadata={"key": "nats.prefix"})
    nats_credentials: str | None = field(default=None, metadata={"key": "nats.credentials"})
    nats_nkey_seed: str | None = field(default=None, metadata={"key": "nats.nkey_seed"})
    nats_tls_ca: str | None = field(default=None, metadata={"key": "nats.tls_ca"})
    nats_tls_cert: str | None = field(default=None, metadata={"key": "nats.tls_cert"})
    nats_tls_key: str | None = field(default=None, metadata={"key": "nats.tls_key"})
    # nats:// only: publishing that waits, in the background, for the server to store each
    # message (JetStream), and the one stream of the bus that stores them (bus.stream.*)
    durable: bool = False
    stream_max_age: float = field(default=7 * 24 * 3600.0, metadata={"key": "stream.max_age"})
    stream_max_bytes: int = field(default=1 << 30, metadata={"key": "stream.max_bytes"})
    stream_replicas: int = field(default=0, metadata={"key": "stream.replicas"})  # 0: 1 or 3
    stream_storage: str = field(default="file", metadata={"key": "stream.storage"})
    # A durable queue group's (group= with durable=): seconds the server waits for a
    # member's acknowledgement before it hands the message to another member
    ack_wait: float = 30.0
    # tcp:// only, read from bus.curve.*: certificate files as `shellbot-bus keygen` writes
    # them (see _transports/zmq/curve.py); none set: a plain bus, as without CURVE
    curve_server_key: str | None = field(default=None, metadata={"key": "curve.server_key"})
    curve_client_key: str | None = field(default=None, metadata={"key": "curve.client_key"})
    curve_authorized: str | None = field(default=None, metadata={"key": "curve.authorized"})

    @property
    def scheme(self) -> str:
        return self.address.split("://", 1)[0]

    @classmethod
    def from_context(cls, context: Any) -> BusSettings:
        """The ``bus.*`` keys of the context; a key missing (or empty) keeps its default."""
        values = context.get("bus", {}) if context is not None else {}
        if not isinstance(values, dict):
            values = {}
        _warn_of_unknown(values)
        given: dict[str, Any] = {}
        for setting in fields(cls):
            key = setting.metadata.get("key", setting.name)
            value = values.get(key)
            if value is None or value == "":
                continue
            number = _NUMBER_TYPES.get(str(setting.type))
            if str(setting.type) == "bool":
                value = _boolean(key, value)
            elif number is not None:
                try:
                    value = number(value)
                except (TypeError, ValueError):
                    raise ConfigurationError(f"bus.{key} takes a number; got {value!r}") from None
            elif not isinstance(value, str):
                raise ConfigurationError(f"bus.{key} takes a string; got {value!r}")
            given[setting.name] = value
        settings = cls(**given)
        check_address(settings.address)
        if not settings.ack_wait > 0:
            raise ConfigurationError(
                f"bus.ack_wait takes seconds above 0; got {settings.ack_wait!r}"
            )
        check_curve_scheme(settings)  # refused on every transport alike
        if settings.stream_storage not in STORAGES:
            raise ConfigurationError(
                f"bus.stream.storage takes 'file' or 'memory'; got {settings.stream_storage!r}"
            )
        return settings


def known_keys() -> list[str]:
    """Every key under ``bus`` that the bus reads."""
    return [setting.metadata.get("key", setting.name) for setting in fields(BusSettings)]


def _warn_of_unknown(values: dict[str, Any]) -> None:
    """A key under ``bus`` that the bus does not read is most likely a typo: say so,
    with the nearest key it reads, once per process and key."""
    unknown = [key for key in values if key not in _warned]
    if not unknown:
        return
    known = known_keys()
    for key in unknown:
        if key in known:
            continue
        _warned.add(key)
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean bus.{nearest[0]}?" if nearest else ""
        log.warning("bus.%s is not a setting of the bus and is ignored%s", key, hint)


def check_curve_scheme(settings: BusSettings) -> None:
    """``ConfigurationError`` when bus.curve.* is set on an address CURVE does not secure."""
    curve = (settings.curve_server_key, settings.curve_client_key, settings.curve_authorized)
    if any(curve) and settings.scheme != "tcp":
        raise ConfigurationError(
            f"bus.curve.* secures tcp:// addresses only; {redacted(settings.address)} "
            "relies on this machine's own permissions (nats://: on the server's "
            "credentials and TLS): remove the bus.curve settings, or use tcp://"
        )


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"bus.{key} takes true or false; got {value!r}")


def check_address(address: Any) -> bool:
    """True for an address the bus can use; ``ConfigurationError`` saying why otherwise."""
    if not isinstance(address, str) or "://" not in address:
        raise ConfigurationError(
            "bus.address must look like tcp://127.0.0.1:5555 (or ipc://, inproc://, memory://, "
            f"nats://); "
            f"got {address!r}"
        )
    scheme, rest = address.split("://", 1)
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"bus.address {address!r} has the unknown scheme '{scheme}'; "
            f"use one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if not rest:
        raise ConfigurationError(f"bus.address {address!r} names no endpoint")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"bus.address {address!r} needs a host and a port from 1 to 65534, "
                "as in tcp://127.0.0.1:5555"
            )
        if int(port) == 65535:
            raise ConfigurationError(
                f"bus.address {address!r}: the hub's inbound side takes the port after the "
                "address's, and there is none after 65535; use a port from 1 to 65534"
            )
    if scheme == "nats":
        nats_servers(address)
    return True


def nats_servers(address: str) -> list[str]:
    """The servers of a ``nats://`` address: one URL, or a comma-separated list of them,
    each ``nats://[user:password@ or token@]host[:port]``."""
    servers = [server.strip() for server in address.split(",")]
    for server in servers:
        try:
            parts = urlsplit(server)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (
            parts is None
            or parts.scheme != "nats"
            or not parts.hostname
            or parts.path not in ("", "/")
            or (port is not None and not 0 < port < 65536)
        ):
            raise ConfigurationError(
                f"bus.address {redacted(address)!r}: {redacted(server)!r} is not a NATS "
                "server; write "
                "nats://host:4222, or several joined by commas for a cluster "
                "(nats://h1:4222,nats://h2:4222), with user:password@ or token@ when needed"
            )
    return servers


def redacted(address: str) -> str:
    """The address as messages show it: the password or token of each ``nats://``
    server as ``***`` (``nats://alice:***@host``), so that errors and logs keep none."""
    if "@" not in address or not address.startswith("nats://"):
        return address
    shown = []
    for server in address.split(","):
        scheme, separator, rest = server.rpartition("://")
        credentials, at, host = rest.rpartition("@")
        if at:
            user, colon, _ = credentials.partition(":")
            server = f"{scheme}{separator}{user + ':***' if colon else '***'}@{host}"
        shown.append(server)
    return ",".join(shown)


def as_context(value: Any, who: str) -> Context:
    """The context ``who`` works with: a ``Context``, or a bus address (as the spec's
    ``Publisher(address)``), or None for the defaults."""
    if isinstance(value, Context):
        return value
    if value is None:
        return Context()
    if isinstance(value, str):
        check_address(value)
        return Context({"bus": {"address": value}})
    raise TypeError(
        f"{who} takes a shellbot.Context (or a bus address); it got {type(value).__name__}: "
        "make one with Context({'bus': {'address': 'tcp://127.0.0.1:5555'}})"
    )
