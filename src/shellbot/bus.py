"""The information bus between publishers and subscribers.

Example::

    from shellbot import Context
    from shellbot.bus import Bus

    context = Context()
    bus = Bus(context)
    bus.check()                                # bus.address defaults to tcp://127.0.0.1:5555

    publisher = bus.publish()
    publisher.start()                          # holds the hub, or uses the one that does

    subscriber = bus.subscribe('direct-1')
    subscriber.wait_ready()
    publisher.put('direct-1', {'question': 'lunch?'})
    subscriber.get(block=True, timeout=5.0)    # {'question': 'lunch?'}

    context.set('general.switch', 'off')       # stops the publisher
"""

from __future__ import annotations

import typing

from ._message import Message
from ._publishing import Publisher
from ._settings import DEFAULT_ADDRESS as _DEFAULT_ADDRESS
from ._settings import as_context as _as_context
from ._settings import check_address as _check_address
from ._subscriber import Subscriber

if typing.TYPE_CHECKING:  # the module shows only what __all__ names; Context lives in shellbot
    from .context import Context

__all__ = ["Bus", "Message", "Publisher", "Subscriber"]


class Bus:
    """Represents an information bus between publishers and subscribers.

    Channels are non-empty strings and match exactly (``''`` subscribes to
    every channel); messages are JSON values other than ``None``.
    """

    DEFAULT_ADDRESS = _DEFAULT_ADDRESS

    def __init__(self, context: Context | str | None) -> None:
        self.context = _as_context(context, "Bus()")

    def check(self) -> None:
        """Checks the settings under ``bus``: sets ``bus.address`` to the default when
        it is missing, and raises ``ConfigurationError`` (a ``ValueError``) for an
        address the bus cannot use."""
        self.context.check("bus.address", self.DEFAULT_ADDRESS)
        _check_address(self.context.get("bus.address"))

    def publish(self) -> Publisher:
        """A publisher on this bus; ``start()`` it to keep the bus up."""
        return Publisher(self.context)

    def subscribe(
        self,
        channels: str | list[str],
        pattern: bool = False,
        durable: str | None = None,
        group: str | None = None,
    ) -> Subscriber:
        """A subscriber of one channel or a list of channels (``''``: every channel).

        Raises ``ValueError`` for no channel (``None``, ``[]``, ``()``), as ``put()`` does:
        add channels to a live subscriber with ``subscriber.subscribe(channels)``.

        With ``pattern=True``, channels may be NATS-style patterns: ``votes.*``
        matches one dot-separated token, ``votes.>`` one or more.

        With ``durable='name'`` (on a ``nats://`` bus whose server runs JetStream), the
        server keeps the subscriber's position under that name: a subscriber made
        later with the same name, in any process, receives everything published on
        its channels since the last message this one was done with, each message once.

        With ``group='name'``, the subscriber is a member of that queue group: each
        message on its channels goes to one live member of the group (subscribers
        outside it, and other groups, get their own copy). A member's ``missed`` stays
        0, since it sees its share alone: what a group loses is counted where the stream
        is split (``stats['group_lost']`` of the publisher holding the hub).
        """
        return Subscriber(self.context, channels, pattern=pattern, durable=durable, group=group)
