"""nats-py's exceptions as the bus sees them: the one map from them to the bus's errors.

The other modules of the transport catch the groups named here, by what the bus
does with them, and raise what the functions below make: each a bus error
(``shellbot.errors``) whose ``__cause__`` is nats-py's exception.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TypeGuard

from nats import errors as nats_errors
from nats.js import errors as js_errors

from ... import errors
from ..._settings import BusSettings, redacted

# -- groups of nats-py's exceptions, by what the bus does with them

# A stream or consumer the server does not have.
NotFound = js_errors.NotFoundError
# A JetStream API request the server answered with an error (``refused_for_good``).
APIError = js_errors.APIError
# Disconnected while publishing: what was taken is kept, and sent once connected again.
BUFFER_FULL = nats_errors.OutboundBufferLimitError
CLOSED = nats_errors.ConnectionClosedError
NOT_SENT = (BUFFER_FULL, CLOSED)
# A message put before the server's max_payload was known, and over it.
TOO_LARGE = nats_errors.MaxPayloadError
# JetStream not answering (yet): a cluster electing its leaders, or no JetStream at all.
UNAVAILABLE = js_errors.ServiceUnavailableError
NO_JETSTREAM_YET = (UNAVAILABLE, nats_errors.TimeoutError)
# The server cannot answer now (no leader, a timeout, reconnecting): tried again.
NOT_NOW = (js_errors.Error, nats_errors.Error, asyncio.TimeoutError)
# A pull that waited for messages in vain.
NOTHING_YET = (nats_errors.TimeoutError, asyncio.TimeoutError)
# Too slow to read: counted where it shows, as gaps in the subscriber's sequence numbers.
SlowConsumer = nats_errors.SlowConsumerError

STREAM_NAME_IN_USE = 10058  # JetStream's error code: the stream was made meanwhile
BAD_REQUEST = 400  # a JetStream API request the server will never take


def refused_for_good(error: js_errors.APIError) -> bool:
    """Whether trying the request again can only meet the same answer."""
    return error.code == BAD_REQUEST


def is_authorization(error: BaseException | None) -> TypeGuard[nats_errors.AuthorizationError]:
    return isinstance(error, nats_errors.AuthorizationError)


# -- the bus's errors, each with nats-py's as its cause


def connection_refused(settings: BusSettings, error: Exception) -> errors.TransportError | None:
    """What ends this program's connecting for good, from an error nats-py reported
    (refused credentials, a certificate not trusted); None for any other error."""
    address = redacted(settings.address)
    message = None
    if is_authorization(error) or "uthorization" in str(error):
        given = "@" in settings.address or settings.nats_credentials or settings.nats_nkey_seed
        message = (
            f"The NATS server at {address} refused this program's credentials "
            "(authorization violation): check the user:password@ or token@ of "
            "bus.address, or bus.nats.credentials / bus.nats.nkey_seed"
            if given
            else f"The NATS server at {address} requires credentials, and this program "
            "gave none (authorization violation): put user:password@ or token@ in "
            "bus.address, or set bus.nats.credentials / bus.nats.nkey_seed"
        )
    elif isinstance(error, ssl.SSLCertVerificationError):
        # As final as refused credentials: trying again meets the same certificate.
        message = (
            f"The NATS server at {address} presented a TLS certificate this program "
            f"does not trust ({error.verify_message}): set bus.nats.tls_ca to the "
            "certificate of the authority that signed it"
        )
    return None if message is None else errors.TransportError(message)


def gave_up_connecting(settings: BusSettings, error: Exception) -> str:
    """What escaped nats-py's connect() (a file it cannot read, an error while it
    cleans up a failed attempt), which ends connecting."""
    return (
        f"The NATS client gave up connecting to {redacted(settings.address)} "
        f"({type(error).__name__}: {error}): check bus.nats.credentials, "
        "bus.nats.nkey_seed and bus.nats.tls_*"
    )


def connection_closed(
    settings: BusSettings, reason: str, cause: BaseException | None
) -> errors.TransportError:
    """nats-py closed the client for good (the server's -ERR), which connects anew."""
    error = errors.TransportError(
        f"The connection to the NATS server at {redacted(settings.address)} was "
        f"closed ({reason}); the bus connects again, and what was on its way may be "
        "lost (counted as missed by subscribers)"
    )
    error.__cause__ = cause
    return error


def no_jetstream(settings: BusSettings, cause: BaseException) -> errors.TransportError:
    error = errors.TransportError(
        f"The NATS server at {redacted(settings.address)} gave no JetStream "
        f"within {settings.start_timeout:g} s (bus.start_timeout), which "
        "durable subscribers and bus.durable need: start nats-server with -js "
        "(or jetstream {} in its configuration)"
    )
    error.__cause__ = cause
    return error


def stream_refused(name: str, cause: js_errors.APIError) -> errors.ConfigurationError:
    error = errors.ConfigurationError(
        f"The NATS server refused to make the stream {name} "
        f"({cause.description}): check bus.stream.*"
    )
    error.__cause__ = cause
    return error


def durable_refused(what: str, name: str, cause: js_errors.APIError) -> errors.ConfigurationError:
    """``what``: "durable subscriber" or "durable group"."""
    error = errors.ConfigurationError(
        f"The NATS server refused the {what} {name!r} ({cause.description})"
    )
    error.__cause__ = cause
    return error


def not_made(name: str, cause: Exception) -> errors.TransportError:
    """Unforeseen, as a durable subscriber's consumer was made: said, never a silent stall."""
    error = errors.TransportError(
        f"The durable subscriber {name!r} could not be made ({type(cause).__name__}: {cause})"
    )
    error.__cause__ = cause
    return error


def not_forgotten(what: str, name: str, timeout: float, cause: Exception) -> errors.TransportError:
    """``what``: "durable subscriber" or "durable group"."""
    error = errors.TransportError(
        f"The {what} {name!r} could not be forgotten within {timeout:g} s "
        f"({type(cause).__name__}: {cause}); it is kept on the server"
    )
    error.__cause__ = cause
    return error
