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
from typing import Any as _Any

from . import _pending, _requests
from ._message import Message
from ._publishing import Publisher
from ._publishing import outbox as _outbox
from ._settings import DEFAULT_ADDRESS as _DEFAULT_ADDRESS
from ._settings import BusSettings as _BusSettings
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
        """A bus on the settings of ``context``.

        Args:
            context: the settings (``bus.address`` and the other keys under ``bus``): a
                ``Context``, a ``bus.address`` alone, or None for a ``Context`` of its own.

        Raises:
            ConfigurationError: an address the bus cannot use.
            TypeError: ``context`` is none of these.
        """
        self.context = _as_context(context, "Bus()")
        self._settings: _BusSettings | None = None  # read at the first request

    def check(self) -> None:
        """Checks the settings under ``bus``: sets ``bus.address`` to the default when
        it is missing, and raises ``ConfigurationError`` (a ``ValueError``) for an
        address the bus cannot use.

        Raises:
            ConfigurationError: ``bus.address`` is not an address the bus can use.
        """
        self.context.check("bus.address", self.DEFAULT_ADDRESS)
        _check_address(self.context.get("bus.address"))

    def publish(self) -> Publisher:
        """A publisher on this bus; ``start()`` it to keep the bus up.

        Returns:
            A ``Publisher``, not started: ``put()`` works at once, in any process.
        """
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

        Args:
            channels: a channel, or a list of them; ``''`` is every channel.
            pattern: the channels are NATS-style patterns.
            durable: the name under which a JetStream server keeps the position.
            group: the name of the queue group the subscriber joins.

        Returns:
            A ``Subscriber``; ``wait_ready()`` says when its subscriptions are live.

        Raises:
            ValueError: no channel, an invalid pattern, or ``durable`` / ``group`` where
                the bus cannot keep them (``ConfigurationError``).
            TypeError: a channel that is not a str.
        """
        return Subscriber(self.context, channels, pattern=pattern, durable=durable, group=group)

    # -- requests ---------------------------------------------------------------------

    def request(self, channel: str, message: _Any, timeout: float = 2.0) -> _Any:
        """Sends ``message`` as a request on ``channel`` and returns the first answer
        (its payload, as ``get()`` returns payloads).

        A subscriber of the channel takes the request as a ``Message`` (``receive()``,
        ``areceive()``, iteration) and answers with ``message.reply(answer)``; ``get()``
        hands the payload only, which cannot be answered. Raises ``NoResponders`` at
        once when no one subscribes to the channel, ``TimeoutError`` when no answer
        came within ``timeout`` seconds, and for a channel or message ``put()``
        refuses, what ``put()`` raises.
        """
        return self._ask(channel, message, timeout, 1)[0].message

    async def arequest(self, channel: str, message: _Any, timeout: float = 2.0) -> _Any:
        """``request()`` without blocking the event loop."""
        return (await self._aask(channel, message, timeout, 1))[0].message

    def request_all(
        self, channel: str, message: _Any, timeout: float = 2.0, count: int | None = None
    ) -> list[Message]:
        """Sends a request and returns the answers (each a ``Message``, with the responders'
        ``sender``) that came within ``timeout`` seconds, or as soon as ``count`` came:
        a scatter-gather. Raises ``NoResponders`` when no one subscribes to the
        channel; no answer at all is an empty list."""
        return self._ask(channel, message, timeout, _pending.check_count(count), False)

    async def arequest_all(
        self, channel: str, message: _Any, timeout: float = 2.0, count: int | None = None
    ) -> list[Message]:
        """``request_all()`` without blocking the event loop."""
        count = _pending.check_count(count)
        return await self._aask(channel, message, timeout, count, False)

    @property
    def request_stats(self) -> dict[str, int]:
        """This process's requests on this bus: ``requests`` sent, ``answers`` taken,
        ``late`` answers (their request had ended: dropped), ``no_responders``,
        ``timeouts`` and ``dropped`` (answers that did not read); on NATS, also
        ``replies_dropped``: answers this process sent that found no requester (a hub
        of the bus's own counts those in its ``publisher.stats``)."""
        settings = self._bus_settings()
        requester = _requests.existing_requester(settings)
        stats = {} if requester is None else requester.counters
        outbox = _outbox.existing_outbox(settings)
        if outbox is not None and outbox.replies_dropped():
            stats["replies_dropped"] = outbox.replies_dropped()
        return stats

    def _bus_settings(self) -> _BusSettings:
        if self._settings is None:
            self._settings = _BusSettings.from_context(self.context)
        return self._settings

    def _ask(
        self, channel: str, message: _Any, timeout: float, count: int | None, first: bool = True
    ) -> list[Message]:
        timeout = _pending.check_timeout(timeout)
        requester = _requests.requester_for(self._bus_settings())
        waiting = requester.send(channel, message, timeout, count)
        try:
            requester.wait(waiting, timeout)
        finally:
            requester.pending.end(waiting)
        return _requests.outcome(waiting, timeout, first)

    async def _aask(
        self, channel: str, message: _Any, timeout: float, count: int | None, first: bool = True
    ) -> list[Message]:
        timeout = _pending.check_timeout(timeout)
        requester = _requests.requester_for(self._bus_settings())
        waiting = requester.send(channel, message, timeout, count)
        try:
            await requester.wait_async(waiting, timeout)
        finally:
            requester.pending.end(waiting)
        return _requests.outcome(waiting, timeout, first)
