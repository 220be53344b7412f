"""The envelope of a received message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """A message with what came with it.

    ``sender`` identifies the publishing process on this address (a random
    64-bit number, new for each process); ``sequence`` counts the messages that
    process put on this channel, from 1. A gap between two sequences of one
    sender is what the subscriber's ``stats['missed']`` counts.
    """

    channel: str
    message: Any
    sender: int
    sequence: int
