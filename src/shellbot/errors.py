"""Every error shellbot raises, in one place.

The tree::

    ShellbotError                      root of everything raised here
    +-- ConfigurationError (ValueError)  a setting is missing or invalid
    +-- MessageError (ValueError)        put() got a channel or a message it cannot send
    |   +-- MessageTooLarge              the encoded message exceeds bus.max_message_size
    +-- TransportError                   the transport failed (ZeroMQ, NATS); the cause is chained
    |   +-- AddressInUse                 the address is held by something that is not a hub
    |   +-- AuthenticationError          a secured hub refused this process, or it the hub
    +-- TimeoutError (builtin TimeoutError)  a bounded wait ran out
    +-- NoResponders                     a request's channel has no subscriber at all
    +-- ClosedError                      the subscriber or publisher was closed

Invalid channel or message types raise the builtin ``TypeError``, as Python does
for a wrong argument type; invalid values raise ``MessageError``, a ``ValueError``.
Foreign errors (``zmq.ZMQError``) are translated where they enter, with the
original chained as ``__cause__``.
"""

from __future__ import annotations

import builtins

__all__ = [
    "AddressInUse",
    "AuthenticationError",
    "ClosedError",
    "ConfigurationError",
    "MessageError",
    "MessageTooLarge",
    "NoResponders",
    "ShellbotError",
    "TimeoutError",
    "TransportError",
]


class ShellbotError(Exception):
    """Root of every error raised by shellbot."""


class ConfigurationError(ShellbotError, ValueError):
    """A setting is missing or invalid: the message names the key and what it takes."""


class MessageError(ShellbotError, ValueError):
    """``put()`` was given a channel or a message that cannot be sent; nothing was queued."""


class MessageTooLarge(MessageError):
    """The encoded message exceeds ``bus.max_message_size``; nothing was queued."""


class TransportError(ShellbotError):
    """The transport failed; the original error is chained as ``__cause__``."""


class AddressInUse(TransportError):
    """The bus address is held by a program that does not answer as a hub."""


class AuthenticationError(TransportError):
    """A CURVE handshake failed: the message says which side refused and what to check."""


class TimeoutError(ShellbotError, builtins.TimeoutError):
    """A bounded wait ran out. Also a builtin ``TimeoutError``."""


class NoResponders(ShellbotError):
    """No one subscribes to the channel of a request: the hub (or NATS) said so at once."""


class ClosedError(ShellbotError):
    """The object was closed; create a new one to go on."""
