"""The sender of ``nats://``: ``put()`` appends frames to a queue and wakes the
connection's loop once per burst; the loop publishes what is queued, joining
consecutive messages of one channel into one payload (the same runs as the ZeroMQ
hub makes, split again by the subscriber). Requests and answers wait in that queue
too, so they keep their order with the messages. On a durable bus, runs go to the
stream through ``jetstream.publishing``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence

from nats.aio.msg import Msg

from ... import errors
from ..._codec import CONTROL_BYTE, HEADER, HEADER_SIZE
from ..._settings import redacted
from .._runs import joined, run_limit
from ..base import Sender
from . import errors as mapped
from .connection import UNKNOWN_NODES, _Connection
from .jetstream.publishing import StoredPublishing

log = logging.getLogger("shellbot.bus")

_unpack_header = HEADER.unpack_from
# Requests and answers wait in the sender's queue as these control topics (never a
# bus signal's: those are text), so they keep their order with the messages.
_EXCHANGE = b"\x00"
_REQUEST_ITEM = b"\xff\x00q"  # + reply subject + b" " + the channel's topic
_REPLY_ITEM = b"\xff\x00a"  # + the reply subject to answer on


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
        # bus.durable: channels' runs are published to the stream, and kept until stored
        self._stored: StoredPublishing | None = None
        self._failure: errors.ShellbotError | None = None  # the stream cannot be used
        # Messages put before the server's max_payload was known, and over it: not sent.
        self.oversized = 0
        # The connection was closed for good (and is made anew): the next put() says so.
        self._unreported: errors.TransportError | None = None
        connection.when_closed(self, self._report_closed, self._renewed)
        self._bounces: str | None = None  # where the server says an answer found no one
        self._replies_dropped = 0
        connection.call_soon(self._start)

    # -- in the caller's thread
    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        for topic, body in messages:
            self.send_one(topic, body)

    def send_one(self, topic: bytes, body: bytes) -> None:
        connection = self._connection
        if connection.failure is not None:
            raise connection.failure
        if self._failure is not None:
            raise self._failure
        if self._unreported is not None:
            error, self._unreported = self._unreported, None
            raise error
        max_payload = connection.max_payload
        if (
            max_payload
            and len(body) + len(topic) > max_payload  # else it fits, whatever it carries
            and len(body) > max_payload - (len(topic) if self._naming.carries(topic) else 0)
        ):
            raise errors.MessageTooLarge(self._too_large(topic, body, max_payload))
        queue = self._queue
        if len(queue) >= self._limit:
            self._wait_for_room()
        queue.append((topic, body))
        # The loop clears the flag before it takes the queue: a frame appended after
        # its last look always finds the flag down, and wakes it again.
        if not self._scheduled:
            self._scheduled = True
            connection.call_soon(self._kick)

    def _too_large(self, topic: bytes, body: bytes, max_payload: int) -> str:
        carried = (
            f" and the channel it carries ({len(topic)} bytes: see On NATS in the README)"
            if self._naming.carries(topic)
            else ""
        )
        return (
            f"The message takes {len(body)} bytes with its header{carried}, over the NATS "
            f"server's max_payload ({max_payload}): split it, or raise max_payload in the "
            "server's configuration"
        )

    def send_probe(self, topic: bytes, body: bytes) -> int:
        if len(self._queue) >= self._limit:
            # Cut off with a full queue: a probe would wait bus.send_timeout for room and
            # raise, past the caller's own timeout; nothing leaves, so nothing is proven.
            self._connection.check()
            return UNKNOWN_NODES
        self.send_one(topic, body)
        return 1 + self._connection.probe_elsewhere(self._naming.subject(topic))

    def send_request(self, topic: bytes, body: bytes, reply_to: bytes) -> None:
        """A request leaves in order with the messages, as a NATS request (a reply
        subject, under ``PREFIX.r.``: see ``Naming``), whose no-responders status the
        server sends when no one subscribes."""
        reply = self._naming.inbox_subject(reply_to).encode()
        self.send_one(_REQUEST_ITEM + reply + b" " + topic, body)

    def send_reply(self, reply_at: bytes, body: bytes) -> None:
        """``reply_at`` is the NATS reply subject the request came with."""
        self.send_one(_REPLY_ITEM + reply_at, body)

    async def _publish_exchange(self, item: bytes, body: bytes) -> None:
        client = self._connection.client
        if item.startswith(_REQUEST_ITEM):
            reply, _, topic = item[len(_REQUEST_ITEM) :].partition(b" ")
            subject = self._naming.request_interest(self._naming.subject(topic))
            if self._naming.carries(topic):  # a long channel's: it carries its topic
                body = topic + body
            await client.publish(subject, body, reply=reply.decode())
        else:
            if self._bounces is None:  # before the first answer leaves: in order on the wire
                self._bounces = f"{self._naming.inboxes}{secrets.token_hex(8)}.0"
                await client.subscribe(self._bounces, cb=self._bounced)
            # With a reply subject of its own, an answer whose requester is gone comes
            # back as the server's no-responders status: counted, never raised.
            await client.publish(item[len(_REPLY_ITEM) :].decode(), body, reply=self._bounces)

    async def _bounced(self, message: Msg) -> None:
        if not message.data:
            self._replies_dropped += 1

    def replies_dropped(self) -> int:
        return self._replies_dropped

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self._settings.send_timeout
        with self._room:
            while len(self._queue) >= self._limit:
                self._connection.check()
                if self._unreported is not None:
                    error, self._unreported = self._unreported, None
                    raise error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    closed = self._connection.last_closed
                    raise errors.TimeoutError(
                        f"No NATS server took messages at {redacted(self._settings.address)} "
                        "before "
                        f"bus.send_timeout ({self._settings.send_timeout:g} s), with "
                        f"{len(self._queue)} waiting: check that nats-server runs there"
                        + ("" if closed is None else f" (it last closed the connection: {closed})")
                    )
                self._waiting_for_room = True
                self._room.wait(min(remaining, 0.1))

    def wait_confirmed(self, timeout: float) -> int:
        """Waits until the server took (on a durable bus: stored, or the bound gave up)
        every message sent; returns how many are still unconfirmed on a durable bus.
        Raises the closure of the connection that the server made meanwhile."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Exception):  # what is left is counted below
            self._connection.run(self._flush(timeout), timeout + 1.0)
        # nats-py marks the client closed at once, and says why when it is done closing.
        while self._connection.client.is_closed and self._unreported is None:
            if time.monotonic() >= deadline or self._connection.failure is not None:
                break
            time.sleep(0.01)
        if self._unreported is not None:
            error, self._unreported = self._unreported, None
            raise error
        if self._stored is None and not self._settings.durable:
            return 0
        return len(self._queue) + (self._stored.unconfirmed if self._stored else 0)

    def counters(self) -> dict[str, int]:
        if not self._settings.durable:
            return {"oversized": self.oversized}
        stored = self._stored
        counters = dict.fromkeys(("stored", "retried", "duplicates", "not_stored"), 0)
        counters["oversized"] = self.oversized
        if stored is not None:
            counters.update(stored.counters)
        counters["unconfirmed"] = len(self._queue) + (stored.unconfirmed if stored else 0)
        return counters

    def close(self, linger: float) -> None:
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        connection.forget(self)
        try:
            sent = connection.run(self._flush(linger), linger + 1.0)
        except Exception:
            sent = False
        if self._stored is not None and self._stored.unconfirmed:
            log.warning(
                "%d messages put on %s were not confirmed stored within bus.linger (%g s)",
                self._stored.unconfirmed,
                redacted(self._settings.address),
                linger,
            )
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
    def _report_closed(self, error: errors.TransportError) -> None:
        self._unreported = error
        self._make_room()  # a put() waiting for room says it now

    def _renewed(self) -> None:
        if self._stored is not None:
            self._connection.loop.create_task(self._stored.renew())

    def _start(self) -> None:
        if self._settings.durable:
            connection = self._connection
            self._stored = StoredPublishing(
                self._settings, connection.client, connection.stream, connection.connected_once
            )
            connection.loop.create_task(self._open_stored(self._stored))
        self._wake = asyncio.Event()
        self._connection.loop.create_task(self._pump())
        self._connection.when_connected(self._kick)

    async def _open_stored(self, stored: StoredPublishing) -> None:
        try:
            await stored.open()
        except errors.ShellbotError as error:  # the stream cannot be used: put() says so
            self._failure = error
            log.warning("NATS: %s", error)
        except Exception:
            pass

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
        stored = self._stored.publish if self._stored is not None else None
        limit = run_limit(self._settings.max_message_size)  # the rule of every transport
        if client.max_payload:  # a run is one NATS message: the server's limit holds too
            limit = min(limit, client.max_payload)
        carries, short = self._naming.carries, self._naming.short_topic
        taken = 0
        try:
            while queue and client.is_connected:
                topic, body = queue.popleft()
                taken += 1
                # A long channel's message carries its topic (see Naming).
                carried = topic[0] != CONTROL_BYTE and len(topic) > short and carries(topic)
                if queue and topic[0] != CONTROL_BYTE:
                    identity, sequence = _unpack_header(body)
                    parts: list[bytes] | None = None
                    size = len(body) + (len(topic) if carried else 0)
                    # ``Run.takes``'s rule (``_runs``), inline as on the hub: a call per
                    # message would cost throughput here too.
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
                        body = joined(parts)
                try:
                    if topic[0] == CONTROL_BYTE and topic[1:2] == _EXCHANGE:
                        await self._publish_exchange(topic, body)
                    elif stored is not None and topic[0] != CONTROL_BYTE:
                        await stored(subject_of(topic), body, topic if carried else b"")
                    else:
                        await publish(subject_of(topic), topic + body if carried else body)
                except errors.ShellbotError as error:  # the stream cannot be used
                    self._failure = error
                    log.warning("NATS: %s", error)
                    queue.clear()
                    break
                except mapped.TOO_LARGE:
                    # Put before the server's max_payload was known: this one alone is lost.
                    self._oversized(topic, body)
                if taken >= 4096:  # let the loop read and ping between long bursts
                    taken = 0
                    self._make_room()
                    await asyncio.sleep(0)
        except mapped.BUFFER_FULL:
            pass  # disconnected meanwhile: the reconnection wakes us again
        except mapped.CLOSED as error:
            log.warning("NATS: a message could not be published (%s)", error)
        finally:
            self._make_room()

    def _oversized(self, topic: bytes, body: bytes) -> None:
        """Counts and says a message put before the server's max_payload was known, and
        over it: lost alone."""
        if topic[0] == CONTROL_BYTE:
            return  # the bus's own signals are small
        self.oversized += 1  # alone in its payload: a run is cut to the server's limit
        log.warning(
            "NATS: a message put on the channel %s was not sent: %d bytes with the "
            "bus's header, over the server's max_payload (%d)",
            _shown(topic),
            len(body),
            self._connection.client.max_payload,
        )

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
                    if self._stored is not None:
                        return await self._stored.settled(deadline - loop.time())
                    with contextlib.suppress(Exception):
                        await client.flush(max(1, round(deadline - loop.time())))  # whole seconds
                        return True
            elif not self._queue:
                return True  # nothing waits here, and no server to answer: nothing to flush
            await asyncio.sleep(0.01)
        return not self._queue


def _shown(topic: bytes, limit: int = 60) -> str:
    """A channel as a log line shows it: a long one cut short, with its length."""
    channel = topic[:-1].decode("utf-8", "replace")
    if len(channel) <= limit:
        return repr(channel)
    return f"{channel[:limit]!r}... ({len(channel)} characters)"
