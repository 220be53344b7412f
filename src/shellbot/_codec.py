"""What goes on the wire, and the checks made before anything is queued.

Every transport carries a message as two frames:

- the topic: the channel's UTF-8 bytes and ``TERMINATOR``. UTF-8 never
  contains the byte 0xFF, so a prefix filter on ``channel + TERMINATOR`` (the
  only filter ZeroMQ has) matches that channel exactly: ``chan`` never sees
  ``channel``. Topics that start with ``CONTROL`` carry the bus's own signals
  (stop pills, readiness probes, routing) and are never shown to users.
- the body: ``HEADER`` (the sending socket's random id and the sequence number
  of the message on that channel, from 1) then the JSON text. Several JSON
  texts may share one body, separated by a newline (JSON encoded here never
  holds a raw newline); they then carry consecutive sequence numbers.

A message may also travel as one frame: the topic, then the body (the topic's
terminator, its first 0xFF byte, ends it). Publishers send that way to the
hub, and a hub that routes (the ZeroMQ one) sends a receiver many such frames,
of any channels, as one batch: a frame of records, each ``RECORD`` (the
lengths of a message's frame and of its topic, and how many messages the body
holds) then that frame. It sends the batch on ``ROUTE`` + the receiver's id, a
topic only that receiver subscribes to. The receiver asks for channels with
``ROUTE_REQUEST`` + its id + ``:`` + the topic prefix it wants (see
``_transports/zmq/endpoints.py``).

Validation and encoding happen once, in the caller of ``put()``; decoding
happens once, in the subscriber. The hub in between forwards bytes.

JSON is written by orjson. What it refuses and Python's ``json`` writes (keys that
are not strings, integers beyond 64 bits, deep nesting, lone surrogates) is written
as ``json`` writes it, so what the original shellbot sent still goes. Keys that are
not strings take orjson's own option (its text reads back the same). Where orjson
would read the text back otherwise (it turns integers beyond 64 bits into floats),
the text is ``json``'s behind ``WIDE``, RFC 7464's record separator: orjson refuses
that byte, so the fast decoding path never changes, and the subscriber reads such a
text with ``json`` in the path where orjson failed (``decode_wide``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from typing import Any

import orjson

from .errors import MessageError, MessageTooLarge

TERMINATOR = b"\xff"
CONTROL = b"\xff"
CONTROL_BYTE = 0xFF
HEADER = struct.Struct("<QQ")
HEADER_SIZE = HEADER.size
BATCH_SEPARATOR = b"\n"

# The bus's own signals, each followed by the identifier of who it is for.
PILL = CONTROL + b"pill:"
PROBE = CONTROL + b"probe:"
# Routing: batches for one receiver, and a receiver's request for a topic prefix.
ROUTE = CONTROL + b"to:"
ROUTE_REQUEST = CONTROL + b"route:"
RECORD = struct.Struct("<III")
RECORD_SIZE = RECORD.size
# Requests and their answers (see ``_requests``). A request is a message on its channel
# whose JSON text is preceded by REQUEST_MARK, the request's reply address and a space:
# JSON text never starts with 0xFF, and a reply address holds no space or newline, so
# a request may share a joined run with messages. An answer travels on REPLY + that
# address; one with an empty body says that no one subscribes to the request's channel.
REQUEST_MARK = b"\xff"
REQUEST_MARK_BYTE = 0xFF
REPLY = CONTROL + b"reply:"
# Queue groups (``_transports/_shares.py``): a member asks for a topic prefix with
# ``SHARE_REQUEST`` + its id + ``:`` + the group's UTF-8 name + ``TERMINATOR`` + the
# prefix; the hub sends it its share on ``ROUTE`` + its id + ``SHARE_MARK`` + the count
# of messages in the batch (``SHARE_COUNT``), and the member returns credit on
# ``CREDIT`` + its id, a body of ``HEADER`` size whose first number is the running total.
SHARE_REQUEST = CONTROL + b"share:"
SHARE_MARK = b"+"
SHARE_COUNT = struct.Struct("<I")
CREDIT = CONTROL + b"credit:"

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
# Marks a JSON text that only Python's json reads back exactly (see above).
WIDE = b"\x1e"


def topic_of(channel: str) -> bytes:
    """The topic frame of a channel (also its exact subscription prefix); ``MessageError``
    for a string that is not text UTF-8 can write (a lone surrogate)."""
    try:
        return channel.encode("utf-8") + TERMINATOR
    except UnicodeEncodeError as error:
        raise MessageError(_not_text(channel, error)) from None


def check_text(channel: str) -> None:
    """``MessageError`` for a channel or pattern that is not text UTF-8 can write."""
    try:
        channel.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MessageError(_not_text(channel, error)) from None


def _not_text(channel: str, error: UnicodeEncodeError) -> str:
    return (
        f"A channel is text: {channel[:60]!r} holds {channel[error.start : error.end]!r} at "
        f"{error.start}, a lone surrogate, which UTF-8 cannot encode (a str decoded with "
        "errors='surrogateescape'?)"
    )


def channel_of(topic: bytes) -> str:
    """The channel named by a topic frame; ``UnicodeDecodeError`` when it is not one."""
    return topic[:-1].decode("utf-8")


def request_body(body: bytes, reply_to: bytes) -> bytes:
    """A request's body: a message's ``body`` (header, JSON) with its reply address."""
    return body[:HEADER_SIZE] + REQUEST_MARK + reply_to + b" " + body[HEADER_SIZE:]


def split_request(text: bytes | memoryview) -> tuple[bytes, bytes] | None:
    """The reply address and the JSON text of a request's text (what follows the
    header), or None when it is not one."""
    text = bytes(text)
    space = text.find(b" ")
    if space <= 1 or text[0] != REQUEST_MARK_BYTE:
        return None
    return text[1:space], text[space + 1 :]


def request_reply_to(body: bytes) -> bytes | None:
    """The reply address of a request's body (or of a run that begins with one)."""
    if len(body) <= HEADER_SIZE or body[HEADER_SIZE] != REQUEST_MARK_BYTE:
        return None
    space = body.find(b" ", HEADER_SIZE)
    return body[HEADER_SIZE + 1 : space] if space > HEADER_SIZE + 1 else None


def check_channels(channels: Any) -> tuple[str, ...]:
    """The channels of a ``put()``, as a tuple, or an error that says what is wrong."""
    if isinstance(channels, str):
        if not channels:
            raise MessageError("A channel is a non-empty string; put() got ''")
        return (channels,)
    if channels is None:
        raise MessageError("put() needs a channel, or a list of channels; it got None")
    if isinstance(channels, (list, tuple, set, frozenset)):
        if not channels:
            raise MessageError("put() needs at least one channel; it got an empty list")
        for channel in channels:
            if not isinstance(channel, str):
                raise TypeError(
                    f"A channel is a non-empty string; put() got {type(channel).__name__} "
                    f"{channel!r} in its list of channels"
                )
            if not channel:
                raise MessageError("A channel is a non-empty string; put() got '' in its list")
        return tuple(channels)
    raise TypeError(
        f"put() takes a channel (str) or a list of channels; it got {type(channels).__name__}"
    )


def check_subscription(channels: Any) -> tuple[str, ...]:
    """The channels given to ``subscribe()``: a str or a list of str; ``''`` means all."""
    if isinstance(channels, str):
        return (channels,)
    if channels is None:  # as put() has it: no channel is a wrong value, not a wrong type
        raise ValueError(
            "subscribe() needs a channel, or a list of channels ('' for every channel); it got None"
        )
    if isinstance(channels, Iterable) and not isinstance(channels, (bytes, bytearray, dict)):
        channels = tuple(channels)
        for channel in channels:
            if not isinstance(channel, str):
                raise TypeError(
                    f"subscribe() takes channel names (str); it got {type(channel).__name__} "
                    f"{channel!r}"
                )
        return channels
    raise TypeError(
        f"subscribe() takes a channel (str) or a list of channels; it got {type(channels).__name__}"
    )


def check_group(group: Any) -> str | None:
    """The group given to ``subscribe()``: None, or a non-empty name."""
    if group is None:
        return None
    if not isinstance(group, str):
        raise TypeError(f"A group is named by a str; subscribe() got {type(group).__name__}")
    if not group or group.isspace():
        raise ValueError(f"A group is named by a non-empty str; subscribe() got {group!r}")
    return group


def encode(message: Any, max_size: int) -> bytes:
    """The JSON text of a message, or an error raised before anything is queued."""
    if message is None:
        raise MessageError(
            "put() cannot send None: get() returns None to mean 'no message'; "
            "send another value, such as {} or False"
        )
    try:
        data = orjson.dumps(message)
    except orjson.JSONEncodeError as error:
        data = _encode_wide(message, error)
    if b"null" in data and _has_non_finite(message):
        raise MessageError(
            "JSON has no NaN or infinity: the message holds one; replace it before put()"
        )
    if len(data) > max_size:
        raise MessageTooLarge(
            f"The message takes {len(data)} bytes as JSON, over bus.max_message_size "
            f"({max_size}); split it, or raise bus.max_message_size on every side"
        )
    return data


def _encode_wide(message: Any, refused: orjson.JSONEncodeError) -> bytes:
    """What orjson refused, written as Python's json writes it, or the TypeError it raises."""
    try:
        return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        pass
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except ValueError:  # json's word for NaN and infinities
        raise MessageError(
            "JSON has no NaN or infinity: the message holds one; replace it before put()"
        ) from None
    except (TypeError, RecursionError) as error:
        raise TypeError(f"The message cannot be encoded as JSON: {refused}; {error}") from None
    return WIDE + text.encode("ascii")  # ensure_ascii: lone surrogates travel escaped


def decode_wide(data: bytes | memoryview) -> Any:
    """The message of a text that orjson refused to read: one behind ``WIDE``, read with
    Python's json; ``ValueError`` for anything else (it came unreadable)."""
    if data[:1] != WIDE:
        raise ValueError("not JSON")
    try:
        return json.loads(bytes(data[1:]))
    except RecursionError:
        raise ValueError("nested deeper than this process reads") from None


def _has_non_finite(value: Any) -> bool:
    """orjson writes NaN and infinities as null; we refuse them instead of changing data."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(item) for item in value)
    return False


def decode(data: bytes | memoryview) -> Any:
    """The message of one JSON text; ``orjson.JSONDecodeError`` (a ``ValueError``) when bad."""
    return orjson.loads(data)
