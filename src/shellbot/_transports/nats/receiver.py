"""The receivers of ``nats://``: what every receiver on a process's connection shares
(``ConnectionReceiver``), and the core receiver of channels and signals
(``NatsReceiver``); the durable one is in ``jetstream.durable``."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from ... import errors
from ..._codec import CONTROL, request_body
from .._inbox import Inbox
from ..base import Frames, Receiver
from ._client import Headers
from .connection import _Connection
from .naming import CARRIED, NAME_CACHE_LIMIT, encode_token, matches


class ConnectionReceiver(Receiver):
    """What every receiver on a process's connection shares: an inbox the loop fills,
    read from the subscriber's thread; a subclass subscribes and fills it."""

    def __init__(self, connection: _Connection, inbox: Inbox | None = None) -> None:
        self._connection = connection
        self._naming = connection.naming
        self._inbox = inbox or Inbox(connection.settings.receive_high_water_mark)
        self._closed = False
        # A connection closed for good is said by the next receive(); then subscribed anew.
        connection.when_closed(self, self._inbox.report, self._renewed)

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
    def generation(self) -> int:
        return self._connection.generation

    @property
    def closed(self) -> bool:
        return self._closed

    def _renewed(self) -> None:
        """In the loop: the connection was made anew, without this receiver's subscriptions."""

    def _check(self) -> None:
        if self._closed:
            raise errors.ClosedError("The subscriber was closed; subscribe again to go on")
        self._connection.check()


class NatsReceiver(ConnectionReceiver):
    def __init__(
        self, connection: _Connection, inbox: Inbox | None = None, group: str | None = None
    ) -> None:
        # A durable receiver shares its inbox with the core receiver of its signals.
        super().__init__(connection, inbox)
        # A queue group's member subscribes to its channels in the server's queue group of
        # that name: the server gives each message to one member (its signals stay its own).
        self._queue = None if group is None else encode_token(group)
        self._interests: dict[str, int] = {}  # subject -> subscriptions asked (caller's thread)
        # In the loop: the live subscriptions, in the order asked, and for a subject that
        # more than one matches, the subscription that delivers it (NATS sends once per
        # matching subscription; ZeroMQ, and so the bus, once per receiver).
        self._subscriptions: dict[str, Subscription | None] = {}
        self._queue_of: dict[str, str | None] = {}  # subject -> its queue group, if any
        self._deliverer: dict[bytes, str] = {}
        # Only a wildcard interest matches a subject besides its own: without one, every
        # subscription delivers what it gets, and a subscriber of 10,000 channels does
        # not scan them all for each new subject. Each interest's rank in the order asked.
        self._wildcards: list[str] = []
        self._rank: dict[str, int] = {}
        self._asked = 0
        self._answers = self._naming.inboxes.encode()

    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        queue = None if prefix[:1] == CONTROL else self._queue
        for subject in self._naming.interests(prefix, pattern):
            self._add(subject, queue)
            if prefix[:1] != CONTROL:
                # Requests to its channels too (see Naming); a group's go to one member.
                self._add(self._naming.request_interest(subject), queue)

    def _add(self, subject: str, queue: str | None) -> None:
        count = self._interests.get(subject, 0)
        self._interests[subject] = count + 1
        if count == 0:
            self._connection.call_soon(self._change, subject, True, queue)

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        for subject in self._naming.interests(prefix, pattern):
            self._remove(subject)
            if prefix[:1] != CONTROL:
                self._remove(self._naming.request_interest(subject))

    def _remove(self, subject: str) -> None:
        count = self._interests.get(subject, 0)
        if count <= 1:
            self._interests.pop(subject, None)
            if count == 1:
                self._connection.call_soon(self._change, subject, False)
        else:
            self._interests[subject] = count - 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connection.forget(self)
        self._inbox.close()
        subjects = list(self._interests)
        self._interests.clear()
        for subject in subjects:
            self._connection.call_soon(self._change, subject, False)

    # -- in the loop: changes run one after the other, in the order they were asked
    def _change(self, subject: str, subscribing: bool, queue: str | None = None) -> None:
        self._deliverer.clear()
        wildcard = any(token in ("*", ">") for token in subject.split("."))
        if subscribing:
            self._subscriptions[subject] = None  # taken: messages may come before the sid
            self._queue_of[subject] = queue
            self._asked += 1
            self._rank[subject] = self._asked
            if wildcard:
                self._wildcards.append(subject)
            self._connection.loop.create_task(self._subscribe(subject, queue))
        else:
            self._rank.pop(subject, None)
            self._queue_of.pop(subject, None)
            if wildcard and subject in self._wildcards:
                self._wildcards.remove(subject)
            subscription = self._subscriptions.pop(subject, None)
            if subscription is not None:
                self._connection.client.forget(subscription)
                self._connection.loop.create_task(unsubscribe_quietly(subscription))

    def _renewed(self) -> None:
        self._deliverer.clear()
        for subject, subscription in list(self._subscriptions.items()):
            if subscription is not None:
                self._connection.client.forget(subscription)
            self._subscriptions[subject] = None
            queue = self._queue_of.get(subject)
            self._connection.loop.create_task(self._subscribe(subject, queue))

    async def _subscribe(self, interest: str, queue: str | None = None) -> None:
        client = self._connection.client
        # Waiting tasks wake in the order they began to wait: the SUBs keep their order.
        await self._connection.connected_once.wait()
        try:
            subscription = await client.subscribe(interest, queue=queue or "")
        except Exception:
            if self._connection.failure is None and not client.is_closed:
                raise
            return  # refused, or closed: receive() says so (and _renewed subscribes again)
        if interest in self._subscriptions and self._subscriptions[interest] is None:
            self._subscriptions[interest] = subscription
            if interest.startswith(self._naming.requests):  # the reply subject matters
                client.take_raw(subscription, functools.partial(self._deliver_request, interest))
            else:
                client.take(subscription, functools.partial(self._deliver, interest))
        else:  # unsubscribed meanwhile
            await unsubscribe_quietly(subscription)

    def _deliver(self, interest: str, subject: bytes, data: bytes) -> None:
        if (
            self._wildcards
            and self._queue is None  # in a queue group, the server sends one member one copy
            and not subject.startswith(self._answers)  # an inbox's: one interest matches
            and self._delivered_by(subject) != interest
        ):
            return  # another subscription of this receiver delivers this one
        topic = self._naming.topic(subject)
        if topic is CARRIED:  # a long channel's: the channel is in the payload
            topic, data = self._naming.carried(subject, data)
        # A subject the naming rule never writes comes as one frame: dropped and counted.
        self._inbox.push([data] if topic is None else [topic, data])

    def _deliver_request(
        self, interest: str, subject: bytes, reply: bytes, data: bytes, headers: Headers
    ) -> None:
        if self._wildcards and self._queue is None and self._delivered_by(subject) != interest:
            return
        topic = self._naming.topic(subject)
        if topic is CARRIED:  # a request to a long channel: the channel is in the payload
            topic, data = self._naming.carried(subject, data)
        if topic is None:
            self._inbox.push([data])
        else:  # the reply subject travels in the body, as on every transport
            self._inbox.push([topic, request_body(data, reply) if reply else data])

    def _delivered_by(self, subject: bytes) -> str | None:
        """The first interest, in the order asked, that matches ``subject``."""
        interest = self._deliverer.get(subject)
        if interest is None:
            name = subject.decode("utf-8", "replace")
            matching = [i for i in self._wildcards if matches(i, name)]
            if name in self._rank:  # its own exact interest
                matching.append(name)
            interest = min(matching, key=self._rank.__getitem__, default=None)
            if interest is not None:
                if len(self._deliverer) >= NAME_CACHE_LIMIT:
                    self._deliverer.clear()
                self._deliverer[subject] = interest
        return interest


async def unsubscribe_quietly(
    subscription: Subscription | JetStreamContext.PullSubscription,
) -> None:
    """Unsubscribes, if the connection still can."""
    with contextlib.suppress(Exception):  # gone with a closed connection
        await subscription.unsubscribe()
