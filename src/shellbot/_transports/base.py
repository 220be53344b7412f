"""The contract every transport fulfils, and nothing more.

A transport moves ``(topic, body)`` frames for one bus address: senders put
frames in, receivers take the frames whose topic starts with one of their
prefixes out, and a hub joins them: one the bus holds itself (ZeroMQ, memory),
or a broker that is already running (NATS). Validation, JSON, sequence numbers
and the public API live above, written once.

Topics are the bus's own (``_codec``: a channel's UTF-8 bytes and a terminator,
or a bus signal); a transport whose wire names things otherwise (NATS
subjects) maps them, both ways, inside itself.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Sequence

from .._codec import REPLY, request_body
from .._settings import BusSettings
from ..errors import ConfigurationError

Frames = list[bytes]


class Sender(abc.ABC):
    """One per process and address; safe to call from several threads."""

    @abc.abstractmethod
    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Queues ``(topic, body)`` pairs, in order. Waits (bounded) when the queue is full."""

    def send_one(self, topic: bytes, body: bytes) -> None:
        """``send([(topic, body)])``, for a caller that serializes its calls (the outbox);
        ``topic`` is a channel's topic. A transport may do this one cheaper."""
        self.send([(topic, body)])

    def send_probe(self, topic: bytes, body: bytes) -> int:
        """Sends a readiness probe on the signal ``topic``, in order after what was sent.

        A receiver that subscribed to ``topic`` after its other subscriptions, and
        then receives the probe, knows those subscriptions live wherever a
        publisher may be. Returns how many copies prove it, each with another
        sender id in its header: one through a hub; one per server of a cluster,
        whose nodes learn of subscriptions each in its own time.
        """
        self.send([(topic, body)])
        return 1

    def send_request(self, topic: bytes, body: bytes, reply_to: bytes) -> None:
        """Sends a request on a channel's ``topic``, in order after what was sent: a
        message whose answers go to ``reply_to`` (a ``ReplyInbox`` address). Receivers
        get it as ``_codec.request_body(body, reply_at)``, where ``reply_at`` is what
        ``send_reply`` takes (the same address here, a transport's own elsewhere). When
        no receiver wants the channel, the hub (or broker) answers at once with an
        empty body on ``REPLY + reply_to``."""
        self.send([(topic, request_body(body, reply_to))])

    def send_reply(self, reply_at: bytes, body: bytes) -> None:
        """Sends an answer to the request that carried ``reply_at``. An answer that
        finds no requester is dropped and counted by the hub, never raised here."""
        self.send([(REPLY + reply_at, body)])

    def replies_dropped(self) -> int:
        """Answers this sender sent that the broker said found no requester (NATS); 0
        where a hub of the bus's own counts them (``replies_dropped`` in its stats)."""
        return 0

    def handshake_failure(self) -> str | None:
        """Why the hub refused this sender's latest handshake (a secured bus), or None.
        Asked only while waiting for readiness: never on the way of a message."""
        return None

    def wait_confirmed(self, timeout: float) -> int:
        """Waits at most ``timeout`` seconds until the server confirmed it stored every
        message sent (``bus.durable``); returns how many are still unconfirmed. A
        transport that stores nothing confirms nothing more than sending: 0."""
        return 0

    def counters(self) -> dict[str, int]:
        """What storing counted (``stored``, ``retried``, ``duplicates``, ``not_stored``,
        ``unconfirmed``), on a durable bus; else nothing."""
        return {}

    @abc.abstractmethod
    def close(self, linger: float) -> None:
        """Lets queued frames leave for at most ``linger`` seconds, then closes."""


class Receiver(abc.ABC):
    """Used by one subscriber, from one thread at a time."""

    #: Frames whose topic is this hold a batch of messages (``_codec.RECORD`` records)
    #: that a routing hub sent this receiver alone; None when the transport has no such hub.
    batch_topic: bytes | None = None

    @abc.abstractmethod
    def subscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        """Receives from now on the frames whose topic starts with ``prefix``: a
        channel's topic (that channel), ``b""`` (every channel), a signal's topic,
        or the literal start of ``pattern`` (a NATS-style pattern, which a broker
        may match itself; the subscriber checks every match again)."""

    @abc.abstractmethod
    def unsubscribe(self, prefix: bytes, pattern: str | None = None) -> None:
        """Undoes one ``subscribe(prefix, pattern)``."""

    @abc.abstractmethod
    def receive(self, timeout: float | None) -> Frames | None:
        """The next frames, waiting at most ``timeout`` seconds (0: not at all, None: forever).

        Frames are what the network brought: the subscriber checks them. A transport
        hands a frame it cannot name (a foreign subject) as one frame, dropped and
        counted above. Raises ``TransportError`` when the bus refused this process
        (credentials), ``ClosedError`` once closed.
        """

    def receive_more(self) -> Iterator[Frames]:
        """The frames already queued, without waiting, for as long as the caller asks:
        what a subscriber behind its stream takes in one go."""
        return iter(())

    @abc.abstractmethod
    async def wait_async(self, timeout: float | None) -> bool:
        """Waits, without blocking the event loop, until ``receive(0)`` may return frames."""

    def handshake_failure(self) -> str | None:
        """As ``Sender.handshake_failure``, for this receiver's connection."""
        return None

    @property
    def generation(self) -> int:
        """Changes each time the receiver's connection is made anew (a reconnection to
        another server): readiness proven before is proven no more."""
        return 0

    def acknowledge(self, frames: int, partly: int = 0) -> None:  # noqa: B027 - durable only
        """The program is past the messages of the oldest ``frames`` channel frames this
        receiver delivered (those whose topic is a channel's), in the order delivered:
        a durable receiver tells the server, which will not deliver them again. With
        ``partly`` (as the subscriber closes), the program was also handed the first
        ``partly`` messages of the next frame: a durable receiver keeps that for the
        successor of its name."""

    def settle(self, unhanded: int) -> None:  # noqa: B027 - queue groups only
        """A member of a queue group: of the messages this receiver delivered, the
        subscriber holds ``unhanded`` not yet handed to the program, and is done with
        the others. Where the bus splits the stream itself, the receiver returns that
        credit (the hub sends a member with room); a broker keeps its own account."""

    def counters(self) -> dict[str, int]:
        """What the receiver counted itself, shown in the subscriber's stats (a durable
        group's member: ``redelivered``); else nothing."""
        return {}

    def forget(self, timeout: float) -> None:
        """Closes, and deletes what the server keeps for a durable receiver (its position)."""
        self.close()

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once ``close()`` freed the receiver."""

    @abc.abstractmethod
    def close(self) -> None:
        """Frees the receiver; idempotent."""

    def interrupt(self) -> None:  # noqa: B027 - optional: waits also end on their own
        """From any thread: the owner is closing. Ends a ``wait_async()`` in progress
        and makes later waits return at once, touching nothing that only the owning
        thread may use; the owner calls ``close()`` itself once its wait ended.

        Without it, a wait ends at its timeout, which the subscriber keeps short.
        """


# What a hub counts: users' messages forwarded, and of those, unrouted (no subscriber
# wanted them); the bus's own signals forwarded (readiness probes, stop pills); messages
# dropped (bad shape) and oversized; and, now, subscribers (receivers that asked for at
# least one channel) and routes (channel or pattern, subscriber pairs); queue groups'
# members now, the messages waiting for a member with room, and those lost to a group
# (in a member's hand when it left, or over a full group's backlog: ``_shares``);
# requests it answered itself because no one subscribes to their channel
# (no_responders), and answers it dropped because their requester was gone
# (replies_dropped).
HUB_COUNTERS = (
    "forwarded",
    "unrouted",
    "signals",
    "dropped",
    "oversized",
    "subscribers",
    "routes",
    "group_members",
    "group_waiting",
    "group_lost",
    "no_responders",
    "replies_dropped",
)


class Hub(abc.ABC):
    """Holds the address and forwards frames between senders and receivers."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters (``HUB_COUNTERS``) since the hub started; a missing one is 0."""

    @abc.abstractmethod
    def close(self, drain: float) -> None:
        """Forwards what still arrives for at most ``drain`` seconds, then frees the address."""


class HubKind(enum.Enum):
    """Who joins senders and receivers of an address."""

    EMBEDDED = "embedded"  # a hub the bus holds: a started publisher holds it or takes it over
    BROKER = "broker"  # a server already running (NATS): no one holds or takes over anything


class Transport(abc.ABC):
    """One bus address as seen from one process."""

    #: True when every party must live in the same process (``inproc://``, ``memory://``):
    #: a publisher then runs its loop in a thread instead of a child process.
    process_local: bool = False
    hub_kind: HubKind = HubKind.EMBEDDED
    #: True when the server stores messages and keeps subscribers' positions (JetStream):
    #: only then do ``open_receiver(durable=...)`` and ``bus.durable`` work.
    stores_messages: bool = False
    #: For a broker's transport: what the broker is, as people call it ("a NATS server").
    broker_name: str = ""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def open_sender(self) -> Sender:
        """A new sender; the bus keeps one per process."""

    @abc.abstractmethod
    def open_receiver(self, durable: str | None = None, group: str | None = None) -> Receiver:
        """A new receiver, subscribed to nothing; with ``durable``, one whose position the
        server keeps under that name (see ``stores_messages``; else ``check_storage``
        refuses it); with ``group``, a member of that queue group for every channel it
        subscribes to (signals stay its own): each message goes to one member."""

    @abc.abstractmethod
    def open_hub(self) -> Hub | None:
        """A hub holding the address, or None when another hub already holds it
        (a broker's transport: always None, and nobody asks)."""

    def check_storage(self, durable: str | None = None) -> None:
        """Refuses ``durable`` and ``bus.durable`` on a transport that stores nothing."""
        if self.stores_messages or (durable is None and not self.settings.durable):
            return
        what = f"A durable subscriber (durable={durable!r})" if durable else "bus.durable"
        raise ConfigurationError(
            f"{what} needs a server that stores messages: a nats:// bus.address whose "
            f"server runs JetStream; {self.settings.scheme}:// delivers at most once"
        )

    def check(self) -> None:  # noqa: B027 - optional: most transports have nothing to check
        """Raises ``ConfigurationError`` for settings of its own that this transport cannot
        use (a key file that does not read), before anything is opened."""

    def publisher_address(self) -> str:
        """Where publishers connect, as people read it: ``bus.address`` unless the
        transport gives them a side of their own."""
        return self.settings.address

    def hub_refused(self) -> str | None:
        """Why this process may not hold a hub at the address although it could bind it
        (a secured bus whose hub certificate it has the public half of only), or None."""
        return None

    def not_a_hub(self) -> str | None:
        """Once ``open_hub()`` found the address held: why its holder cannot be a hub,
        when the transport can tell at once (it does not speak the protocol); else None.
        Raises ``AuthenticationError`` when the hub is secured and this program is not."""
        return None

    def unreachable(self) -> str:
        """What ``start()`` says when it reached no hub within ``bus.start_timeout``."""
        settings = self.settings
        return (
            f"No hub answered at {settings.address} within {settings.start_timeout:g} s "
            "(bus.start_timeout): check bus.address, or start `shellbot-bus hub` there"
        )
