"""The contract every transport fulfils, and nothing more.

A transport moves ``(topic, body)`` frames for one bus address: senders put
frames in, receivers take the frames whose topic starts with one of their
prefixes out, and a hub (where the transport has one) joins them. Validation,
JSON, sequence numbers and the public API live above, written once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from .._settings import BusSettings

Frames = list[bytes]


class Sender(abc.ABC):
    """One per process and address; safe to call from several threads."""

    @abc.abstractmethod
    def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Queues ``(topic, body)`` pairs, in order. Waits (bounded) when the queue is full."""

    @abc.abstractmethod
    def close(self, linger: float) -> None:
        """Lets queued frames leave for at most ``linger`` seconds, then closes."""


class Receiver(abc.ABC):
    """Used by one subscriber, from one thread at a time."""

    #: Frames whose topic is this hold a batch of messages (``_codec.RECORD`` records)
    #: that a routing hub sent this receiver alone; None when the transport has no such hub.
    batch_topic: bytes | None = None

    @abc.abstractmethod
    def subscribe(self, prefix: bytes) -> None:
        """Receives from now on the frames whose topic starts with ``prefix``."""

    @abc.abstractmethod
    def unsubscribe(self, prefix: bytes) -> None:
        """Undoes one ``subscribe(prefix)``."""

    @abc.abstractmethod
    def receive(self, timeout: float | None) -> Frames | None:
        """The next frames, waiting at most ``timeout`` seconds (0: not at all, None: forever)."""

    @abc.abstractmethod
    async def wait_async(self, timeout: float | None) -> bool:
        """Waits, without blocking the event loop, until ``receive(0)`` may return frames."""

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
# least one channel) and routes (channel or pattern, subscriber pairs).
HUB_COUNTERS = (
    "forwarded",
    "unrouted",
    "signals",
    "dropped",
    "oversized",
    "subscribers",
    "routes",
)


class Hub(abc.ABC):
    """Holds the address and forwards frames between senders and receivers."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters (``HUB_COUNTERS``) since the hub started; a missing one is 0."""

    @abc.abstractmethod
    def close(self, drain: float) -> None:
        """Forwards what still arrives for at most ``drain`` seconds, then frees the address."""


class Transport(abc.ABC):
    """One bus address as seen from one process."""

    #: True when every party must live in the same process (``inproc://``, ``memory://``):
    #: a publisher then runs its loop in a thread instead of a child process.
    process_local: bool = False

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def open_sender(self) -> Sender:
        """A new sender; the bus keeps one per process."""

    @abc.abstractmethod
    def open_receiver(self) -> Receiver:
        """A new receiver, subscribed to nothing."""

    @abc.abstractmethod
    def open_hub(self) -> Hub | None:
        """A hub holding the address, or None when another hub already holds it."""

    def not_a_hub(self) -> str | None:
        """Once ``open_hub()`` found the address held: why its holder cannot be a hub,
        when the transport can tell at once (it does not speak the protocol); else None."""
        return None
