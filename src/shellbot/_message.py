"""The envelope of a received message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """A message with what came with it.

    ``sender`` identifies the publishing process on this address (a random
    64-bit number, new for each process); ``sequence`` counts the messages that
    process put on this channel, from 1. A gap between two sequences of one
    sender is what the subscriber's ``stats['missed']`` counts. An answer to a
    request (``bus.request_all()``) has the responder's ``sender`` and sequence 0.

    A request (``bus.request()``) comes to a subscriber as a ``Message`` whose
    ``is_request`` is True: ``reply(answer)`` answers it.
    """

    channel: str
    message: Any
    sender: int
    sequence: int
    _reply: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    @property
    def is_request(self) -> bool:
        """True when this message is a request, which ``reply()`` answers."""
        return self._reply is not None

    def reply(self, answer: Any) -> None:
        """Answers this request with ``answer`` (a JSON value other than None).

        Raises ``TypeError`` / ``MessageError`` for an answer that cannot be sent, as
        ``put()`` does, and ``ValueError`` when this message is not a request. An
        answer to a requester that is gone (it timed out, or stopped) is dropped and
        counted where the bus can see it, never raised here.
        """
        if self._reply is None:
            raise ValueError(
                f"This message on {self.channel!r} is not a request: only a message sent "
                "with bus.request() or bus.request_all() can be answered"
            )
        self._reply(answer)
