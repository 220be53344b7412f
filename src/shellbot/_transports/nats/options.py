"""What every NATS connection of an address passes to nats-py, checked where the
error is seen (a file nats-py would read inside connect(), where a missing one only
shows as a server that never answers), and how servers are named."""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import ParseResult, SplitResult, urlsplit

from ... import errors
from ..._settings import BusSettings

CONNECT_TIMEOUT = 2.0  # seconds for one attempt on one server


def server_key(url: str | SplitResult | ParseResult) -> str:
    """host:port of a server URL (a string or a parsed one), as the client names it."""
    parts = urlsplit(url) if isinstance(url, str) else url
    return f"{parts.hostname}:{parts.port or 4222}"


def connect_options(settings: BusSettings, servers: list[str]) -> dict[str, Any]:
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


def with_credentials(template: str, key: str) -> str:
    """The URL of server ``key`` (host:port) with the credentials of ``template``."""
    parts = urlsplit(template)
    credentials = parts.netloc.rpartition("@")[0]
    return f"nats://{credentials + '@' if credentials else ''}{key}"
