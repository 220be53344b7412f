"""A durable subscriber's receiver: a JetStream consumer that keeps its position.

The consumer is named after the subscriber (``durable='ballots'``), filtered to
its channels, and pushes to an inbox of this connection. The server delivers
at least once; this receiver keeps the delivery in stream order and the
subscriber above drops what came twice, so that the program sees each
message once:

- A frame's acknowledgement is held here, in the order frames were delivered,
  until the subscriber says the program is past its messages
  (``acknowledge``): acknowledgements leave in that order, so everything
  before the first unacknowledged frame is acknowledged.
- Anything that could reorder the delivery (a delivery sequence that skips or
  repeats, a heartbeat saying we missed some, silence, a reconnection, a
  change of channels) makes the consumer anew, starting at the first frame not
  yet acknowledged: what follows comes again, in order, and what the
  subscriber already has is dropped there as a duplicate.
- A new process with the same name starts at the consumer's acknowledgement
  floor: everything not acknowledged comes again.

Bus signals (readiness probes) travel as on core NATS, through a core
receiver sharing this receiver's inbox, subscribed after the consumer was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from nats.aio.subscription import Subscription

from .... import errors
from ...._codec import CONTROL_BYTE
from .. import errors as mapped
from .._client import Headers
from ..connection import _Connection
from ..naming import CARRIED
from ..receiver import ConnectionReceiver, NatsReceiver, unsubscribe_quietly
from .commands import Commands, Filter, Remake, Signal
from .consumer import HEARTBEAT, Consumer
from .order import PublisherOrder, without_first

log = logging.getLogger("shellbot.bus")

SILENCE = 4 * HEARTBEAT  # no delivery nor heartbeat for this long: the consumer is made anew
RETRY = 0.25  # seconds between attempts to make the consumer while the cluster cannot


def _delivery(reply: bytes) -> tuple[int, int] | None:
    """(stream sequence, delivery sequence) from a JetStream delivery's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<time>.<pending>``, or
    the longer form with a domain and an account hash before the stream."""
    tokens = reply.split(b".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6])
    if len(tokens) >= 12:
        return int(tokens[7]), int(tokens[8])
    return None


class DurableReceiver(ConnectionReceiver):
    def __init__(self, connection: _Connection, name: str) -> None:
        self._consumer = Consumer(
            connection.stream, name, connection.settings.receive_high_water_mark
        )
        self.name = name
        super().__init__(connection)
        self._stream = connection.stream
        self._signals = NatsReceiver(connection, self._inbox)
        self._closed = False
        # In the loop:
        # The changes asked for, in order, and what wakes the worker that does them.
        self._commands = Commands()
        self._reconnection: asyncio.Event | None = None  # set as the connection comes back
        self._worker: asyncio.Task[None] | None = None
        self._interests: dict[str, int] = {}  # filter subject -> subscriptions to it
        self._subscription: Subscription | None = None  # the core one of the consumer's inbox
        self._incarnation = 0
        self._made = False
        self._making = False  # a consumer is being made (its requests may be in flight)
        self._remaking = False
        # Frames delivered and not acknowledged, in order: (stream sequence, reply); the
        # reply of a consumer made anew since is None (its frames come again).
        self._outstanding: deque[tuple[int, bytes | None]] = deque()
        self._order = PublisherOrder(connection.settings.send_timeout + 5.0, self._push)
        self._last_stream = 0  # the stream sequence of the latest frame delivered
        self._last_delivery = 0  # the consumer's delivery sequence of that frame
        self._heard = time.monotonic()
        self._failure: errors.ShellbotError | None = None
        # A run the program was handed part of: (stream sequence, messages handed), told
        # as the subscriber closes (to keep), or read from the consumer (to skip).
        self._partly: tuple[int, int] | None = None
        self._skip: tuple[int, int] | None = None
        connection.call_soon(self._start)

    # -- in the caller's thread
    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        if prefix[:1] == bytes([CONTROL_BYTE]):
            self._connection.call_soon(self._commands.put, Signal(prefix, True))
            return
        for subject in self._naming.interests(prefix, pattern):
            self._connection.call_soon(self._commands.put, Filter(subject, 1))

    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        if prefix[:1] == bytes([CONTROL_BYTE]):
            self._connection.call_soon(self._commands.put, Signal(prefix, False))
            return
        for subject in self._naming.interests(prefix, pattern):
            self._connection.call_soon(self._commands.put, Filter(subject, -1))

    def acknowledge(self, frames: int, partly: int = 0) -> None:
        self._connection.call_soon(self._acknowledge, frames, partly)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connection.forget(self)
        self._signals.close()
        self._inbox.close()
        # Acknowledgements asked before leave before the process may end.
        with contextlib.suppress(Exception):
            self._connection.run(self._stop(), 3.0)

    def forget(self, timeout: float) -> None:
        self.close()
        try:
            self._connection.run(self._consumer.delete(), timeout)
        except Exception as error:
            raise mapped.not_forgotten("durable subscriber", self.name, timeout, error) from error

    def _check(self) -> None:
        super()._check()
        if self._failure is not None:
            raise self._failure

    # -- in the loop
    def _start(self) -> None:
        self._commands.start()
        self._reconnection = asyncio.Event()
        self._worker = self._connection.loop.create_task(self._run())
        self._connection.loop.create_task(self._watch())
        self._connection.when_connected(self._reconnected)

    def _reconnected(self) -> None:
        # A consumer being made as the connection went is made again too (what it delivered
        # and the acknowledgements sent went with the connection): see _unless_reconnected.
        if (self._made or self._making) and not self._closed:
            self._remake("reconnected")
            if self._reconnection is not None:
                self._reconnection.set()

    def _renewed(self) -> None:
        if not self._closed:
            self._remake("the connection was made anew")

    def _remake(self, why: str) -> None:
        if not self._remaking:
            self._remaking = True
            log.debug("NATS: durable %s made anew (%s)", self.name, why)
            self._commands.put(Remake())

    async def _run(self) -> None:
        """Does the changes asked for, in order (see ``Commands.run``)."""
        await self._connection.connected_once.wait()
        await self._commands.run(
            self._interests,
            self._signals,
            self._apply,
            lambda: self._closed,
            lambda: self._failure is not None,
        )

    async def _apply(self) -> None:
        """Makes the consumer for the filters now (none left: it is left as it is)."""
        if not self._interests:
            self._remaking = False
            return
        try:
            await self._make()
        except Exception as error:  # unforeseen: said, never a silent stall
            self._fail(mapped.not_made(self.name, error))

    async def _make(self) -> None:
        """Makes the consumer, starting at the first frame not acknowledged; tried
        again until it is made (a cluster may have no leader for a while)."""
        # From here on, what the consumer before delivers is ignored, and its frames not
        # acknowledged yet come again: their acknowledgements would reach no one.
        self._incarnation += 1
        incarnation = self._incarnation
        # What the consumer made now delivers is taken as it comes, even before the
        # server's answer: a remake asked from here on is for this one.
        self._remaking = False
        self._outstanding = deque((stream, None) for stream, _ in self._outstanding)
        self._start_at = self._resume_point()
        self._order.forget_held()
        self._making = True
        try:
            await self._make_at_resume_point(incarnation)
        finally:
            self._making = False

    async def _make_at_resume_point(self, incarnation: int) -> None:
        while not self._closed:
            try:
                if not await self._unless_reconnected(self._attempt(incarnation)):
                    return  # the remake the reconnection asked for follows
                self._made = True
                self._heard = time.monotonic()
                return
            except errors.ShellbotError as error:  # the stream cannot be used: final
                self._fail(error)
                return
            except mapped.APIError as error:
                if mapped.refused_for_good(error):
                    self._fail(mapped.durable_refused("durable subscriber", self.name, error))
                    return
                log.debug("NATS: durable %s not made yet (%s)", self.name, error)
                await asyncio.sleep(RETRY)
            except mapped.NOT_NOW as error:
                log.debug("NATS: durable %s not made yet (%s)", self.name, error)
                await asyncio.sleep(RETRY)

    async def _attempt(self, incarnation: int) -> None:
        client = self._connection.client
        self._drop_subscription()
        await self._stream.ensure()
        start = self._start_at or await self._start_sequence()
        inbox = client.new_inbox()
        self._last_delivery = 0
        subscription = await client.subscribe(inbox)
        client.take_raw(subscription, functools.partial(self._deliver, incarnation))
        self._subscription = subscription
        await self._consumer.make(inbox, start, self._naming.filters(self._interests), self._skip)

    async def _unless_reconnected(self, attempt: Coroutine[Any, Any, None]) -> bool:
        """Runs ``attempt``; False, with it cancelled, if the connection came back
        meanwhile: the answers to its requests went with the old connection (waiting
        for them would hold the remake up for the whole request timeout)."""
        reconnection = self._reconnection
        assert reconnection is not None
        reconnection.clear()
        task = asyncio.ensure_future(attempt)
        reconnected = asyncio.ensure_future(reconnection.wait())
        try:
            await asyncio.wait({task, reconnected}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            reconnected.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: the attempt is given up either way
            return False
        task.result()  # what it raised, raised here
        return True

    def _fail(self, error: errors.ShellbotError) -> None:
        self._failure = error
        self._inbox.interrupt()

    def _resume_point(self) -> int:
        """Where a consumer made anew begins: the first frame not acknowledged (handed on
        or held back), or after the last one delivered; 0 before any delivery."""
        streams = [stream for stream, _ in self._outstanding]
        streams += self._order.held_streams()
        if streams:
            return min(streams)
        return self._last_stream + 1 if self._last_stream else 0

    async def _start_sequence(self) -> int:
        """Where the consumer of a new process begins (see ``Consumer.start``)."""
        start, self._skip = await self._consumer.start()
        return start

    def _deliver(
        self, incarnation: int, subject: bytes, reply: bytes, data: bytes, headers: Headers
    ) -> None:
        if incarnation != self._incarnation or self._closed:
            return  # of a consumer made anew since
        self._heard = time.monotonic()
        if headers and "Status" in headers:
            if headers["Status"] == "100":
                if reply:  # a flow control request: answered, as the protocol asks
                    self._reply(reply)
                last = int(headers.get("Nats-Last-Consumer", 0) or 0)
                if last > self._last_delivery:
                    self._remake(f"heartbeat at delivery {last}, ours {self._last_delivery}")
            else:
                self._remake(f"status {headers['Status']}")
            return
        sequences = _delivery(reply)
        if sequences is None:
            return
        stream, delivery = sequences
        if self._remaking:
            return  # the consumer is being made anew: this comes again
        if delivery != self._last_delivery + 1:
            # Skipped or repeated: what follows could be out of order. It comes again.
            self._remake(f"delivery {delivery} after {self._last_delivery}")
            return
        self._last_delivery = delivery
        self._last_stream = stream
        topic = self._naming.topic(subject)
        if topic is CARRIED:  # a long channel's: the channel is in the payload
            topic, data = self._naming.carried(subject, data)
        if topic is None:  # not a subject the bus writes: dropped (counted above) and done with
            self._inbox.push([data])
            self._reply(reply)
            return
        if self._skip is not None and stream >= self._skip[0]:
            skip, self._skip = self._skip, None
            if stream == skip[0]:  # the run a predecessor closed in: what it was handed goes
                rest = without_first(data, skip[1])
                if rest is None:
                    self._reply(reply)
                    return
                data = rest
        self._order.take(stream, reply, topic, data)

    def _push(self, stream: int, reply: bytes, frame: list[bytes]) -> None:
        """Hands a frame to the subscriber, its acknowledgement kept in that order."""
        self._outstanding.append((stream, reply))
        self._inbox.push(frame)

    def _reply(self, reply: bytes) -> None:
        """An empty message to ``reply``: an acknowledgement, or a flow control answer."""
        self._connection.loop.create_task(self._connection.client.publish(reply.decode(), b""))

    def _acknowledge(self, frames: int, partly: int) -> None:
        outstanding = self._outstanding
        for _ in range(min(frames, len(outstanding))):
            _, reply = outstanding.popleft()
            if reply is not None:
                self._reply(reply)
        if partly and outstanding:
            self._partly = (outstanding[0][0], partly)

    async def _watch(self) -> None:
        """Makes the consumer anew when neither a message nor a heartbeat came for a while."""
        while not self._closed:
            await asyncio.sleep(HEARTBEAT)
            self._order.release_due()
            if self._made and time.monotonic() - self._heard > SILENCE:
                self._heard = time.monotonic()
                self._remake("silence")

    def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            self._connection.client.forget(subscription)
            self._connection.loop.create_task(unsubscribe_quietly(subscription))

    async def _stop(self) -> None:
        self._drop_subscription()
        if self._worker is not None:
            self._worker.cancel()
        if self._partly is not None:
            with contextlib.suppress(Exception):  # else the successor is handed them again
                await self._consumer.keep_handed(*self._partly)
        with contextlib.suppress(Exception):
            await self._connection.client.flush(1)
