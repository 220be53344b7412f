"""A durable queue group's member (``group=`` with ``durable=``): a work queue on JetStream.

The whole group shares one JetStream consumer, named after ``durable``: one
position kept by the server for the group. Each member pulls from it at most
``FETCH`` stored messages at a time, and acknowledges each once the program is
done with its messages (``acknowledge``, as a durable subscriber does), so each
stored message is in one member's hands at a time. A member that dies with
messages in hand leaves them unacknowledged: the server hands them to another
member after ``bus.ack_wait`` seconds. A member that closes gives back what it
did not finish at once (a negative acknowledgement).

What the server delivers again (a member died, or took longer than ``bus.ack_wait``)
may have been done by the member before: such messages are handed anyway, and
counted in the subscriber's ``stats['redelivered']``. No member keeps what it
took, since it sees its share alone. Bus signals travel as on core NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from nats.aio.msg import Msg
from nats.js import api

from .... import errors
from ...._codec import BATCH_SEPARATOR, CONTROL
from .. import errors as mapped
from ..connection import _Connection
from ..naming import CARRIED
from ..receiver import ConnectionReceiver, NatsReceiver, unsubscribe_quietly
from .commands import Commands, Filter, Signal
from .consumer import check_name

log = logging.getLogger("shellbot.bus")

FETCH = 16  # stored messages a member holds at most: fetched, and not acknowledged
FETCH_WAIT = 1.0  # seconds one pull waits for messages before it asks again
RETRY = 0.25  # seconds between attempts while the server cannot answer
NOT_DONE = b"-NAK"  # hands a message to another member at once


def _deliveries(reply: str) -> int:
    """How many times the server delivered the message of this acknowledgement subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>...``, or the longer form with a domain and
    an account hash before the stream."""
    tokens = reply.split(".")
    index = 4 if len(tokens) == 9 else 6
    try:
        return int(tokens[index])
    except (IndexError, ValueError):
        return 1


class WorkReceiver(ConnectionReceiver):
    def __init__(self, connection: _Connection, name: str) -> None:
        self.name = check_name(name)
        super().__init__(connection)
        self._stream = connection.stream
        self._signals = NatsReceiver(connection, self._inbox)
        self._redelivered = 0
        self._failure: errors.ShellbotError | None = None
        # In the loop:
        self._commands = Commands()  # changes asked for, in order
        self._room: asyncio.Event | None = None  # set when a member may fetch more
        self._filters: dict[str, int] = {}  # filter subject -> subscriptions to it
        self._outstanding: deque[str] = deque()  # replies of the frames handed, oldest first
        self._tasks: list[asyncio.Task[None]] = []
        self._pulling = False
        connection.call_soon(self._start)

    # -- in the caller's thread
    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        if prefix[:1] == CONTROL:
            self._connection.call_soon(self._commands.put, Signal(prefix, True))
        else:
            for subject in self._naming.interests(prefix, pattern):
                self._connection.call_soon(self._commands.put, Filter(subject, 1))

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        if prefix[:1] == CONTROL:
            self._connection.call_soon(self._commands.put, Signal(prefix, False))
        else:
            for subject in self._naming.interests(prefix, pattern):
                self._connection.call_soon(self._commands.put, Filter(subject, -1))

    def acknowledge(self, frames: int, partly: int = 0) -> None:
        # What a closing member was handed part of is given back whole, by close().
        if frames:
            self._connection.call_soon(self._acknowledge, frames)

    def counters(self) -> dict[str, int]:
        return {"redelivered": self._redelivered}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._signals.close()
        self._inbox.close()
        with contextlib.suppress(Exception):  # acknowledgements asked before leave first
            self._connection.run(self._stop(), 3.0)

    def forget(self, timeout: float) -> None:
        """Closes, and deletes the group's position: for every member."""
        self.close()

        async def delete() -> None:
            with contextlib.suppress(mapped.NotFound):
                await self._stream.jetstream.delete_consumer(self._stream.name, self.name)

        try:
            self._connection.run(delete(), timeout)
        except Exception as error:
            raise mapped.not_forgotten("durable group", self.name, timeout, error) from error

    def _check(self) -> None:
        super()._check()
        if self._failure is not None:
            raise self._failure

    # -- in the loop
    def _start(self) -> None:
        self._commands.start()
        self._room = asyncio.Event()
        self._tasks.append(self._connection.loop.create_task(self._run()))

    async def _run(self) -> None:
        """Does the changes asked for, in order (see ``Commands.run``)."""
        await self._connection.connected_once.wait()
        await self._commands.run(
            self._filters,
            self._signals,
            self._apply,
            lambda: self._closed,
            lambda: self._failure is not None,
        )

    async def _apply(self) -> None:
        """Makes the group's consumer, or changes its channels, then pulls from it."""
        if not self._filters:
            return
        filters = self._naming.filters(self._filters)  # JetStream refuses overlapping ones
        config = api.ConsumerConfig(
            durable_name=self.name,
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._connection.settings.ack_wait,
            max_deliver=-1,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )
        while not self._closed:
            try:
                await self._stream.ensure()
                await self._stream.jetstream.add_consumer(self._stream.name, config)
                break
            except errors.ShellbotError as error:  # the stream cannot be used: final
                self._fail(error)
                return
            except mapped.APIError as error:
                if mapped.refused_for_good(error):
                    self._fail(mapped.durable_refused("durable group", self.name, error))
                    return
                await asyncio.sleep(RETRY)
            except mapped.NOT_NOW:
                await asyncio.sleep(RETRY)
        if not self._pulling:
            self._pulling = True
            self._tasks.append(self._connection.loop.create_task(self._pull()))

    async def _pull(self) -> None:
        """Fetches while this member holds fewer than FETCH stored messages."""
        room = self._room
        assert room is not None
        subscription = None
        try:
            while not self._closed:
                space = FETCH - len(self._outstanding)
                if space <= 0:
                    room.clear()
                    await room.wait()
                    continue
                try:
                    if subscription is None:
                        subscription = await self._stream.jetstream.pull_subscribe_bind(
                            consumer=self.name, stream=self._stream.name
                        )
                    messages = await subscription.fetch(space, timeout=FETCH_WAIT)
                except mapped.NOTHING_YET:
                    continue
                except mapped.NOT_NOW as error:
                    log.debug("NATS: durable group %s cannot pull yet (%s)", self.name, error)
                    await asyncio.sleep(RETRY)
                    continue
                for message in messages:
                    self._take(message)
        finally:
            if subscription is not None:
                await unsubscribe_quietly(subscription)

    def _take(self, message: Msg) -> None:
        reply = message.reply
        subject, data = message.subject.encode(), message.data
        topic = self._naming.topic(subject)
        if topic is CARRIED:  # a long channel's: the channel is in the payload
            topic, data = self._naming.carried(subject, data)
        if topic is None:  # not a subject the bus writes: dropped (counted above), done with
            self._inbox.push([data])
            self._reply(reply, b"")
            return
        if not self._inbox.push([topic, data]):
            self._reply(reply, NOT_DONE)  # no room: another member, or this one later
            return
        if _deliveries(reply) > 1:
            self._redelivered += data.count(BATCH_SEPARATOR) + 1
        self._outstanding.append(reply)

    def _acknowledge(self, frames: int) -> None:
        outstanding = self._outstanding
        for _ in range(min(frames, len(outstanding))):
            self._reply(outstanding.popleft(), b"")
        if self._room is not None:
            self._room.set()

    def _reply(self, reply: str, payload: bytes) -> None:
        self._connection.loop.create_task(self._connection.client.publish(reply, payload))

    def _fail(self, error: errors.ShellbotError) -> None:
        self._failure = error
        self._inbox.interrupt()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        while self._outstanding:  # not done here: to another member at once
            self._reply(self._outstanding.popleft(), NOT_DONE)
        with contextlib.suppress(Exception):
            await self._connection.client.flush(1)
