"""How the bus names things on NATS: channels and signals as subjects, both ways.

The rule is ``Naming``'s docstring; it is reversible and has one spelling per
channel, so a subject it never writes names no channel.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable

from ... import errors
from ..._codec import REPLY

NAME_CACHE_LIMIT = 100_000  # subjects whose topics are remembered
# The longest subject the rule writes for a channel; a longer one is its digest's
# (``Naming``). The server refuses a protocol line over its max_control_line (4 KiB by
# default) and closes the connection: this leaves room for a reply subject, the
# JetStream API's subjects, which hold a filter subject, and a server set lower.
LONG_SUBJECT = 1024
PREFIX_LIMIT = 256  # characters of bus.nats.prefix, so that a digest's subject is short
LONG_TOKEN = "%long"  # never a token of the rule's: encode_token writes "%" with hex digits
DIGEST_SIZE = 16  # bytes of BLAKE2b: 32 hexadecimal digits
# What ``Naming.topic`` returns for a long channel's subject: the topic travels with
# the message (``Naming.carried``).
CARRIED = b"\xff\xffcarried"


_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


def encode_token(token: str) -> str:
    """One dot-free piece of a channel as a NATS subject token: ASCII letters, digits,
    ``-`` and ``_`` stay; every other byte of its UTF-8 is ``%XX``; '' is ``%``."""
    if not token:
        return "%"
    if all(character in _SAFE for character in token):
        return token
    return "".join(
        character if character in _SAFE else "".join(f"%{byte:02X}" for byte in character.encode())
        for character in token
    )


def decode_token(token: str) -> str:
    """The piece of a channel that ``token`` encodes; ``ValueError`` when it is not
    exactly what ``encode_token`` writes (a subject of another program)."""
    if token == "%":
        return ""
    if "%" not in token:
        if not token or not all(character in _SAFE for character in token):
            raise ValueError(token)
        return token
    data = bytearray()
    index = 0
    while index < len(token):
        character = token[index]
        if character == "%":
            data.append(int(token[index + 1 : index + 3], 16))  # ValueError when not hex
            if len(token[index + 1 : index + 3]) != 2:
                raise ValueError(token)
            index += 3
        elif character in _SAFE:
            data.append(ord(character))
            index += 1
        else:
            raise ValueError(token)
    piece = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if encode_token(piece) != token:
        raise ValueError(token)
    return piece


class Naming:
    """Topics as NATS subjects, both ways, under one prefix (``bus.nats.prefix``).

    A channel is ``PREFIX.c.`` and its dot-separated pieces, each encoded by
    ``encode_token``: ``votes.alice`` is ``shellbot.c.votes.alice``, ``a b`` is
    ``shellbot.c.a%20b``, ``*`` is ``shellbot.c.%2A``. Dots stay token
    separators, so a pattern (``votes.*``) is matched by the server. Every channel
    is under ``PREFIX.c.>``, which is what ``''`` subscribes to; the bus's own
    signals are under ``PREFIX.s.``.

    A channel whose subject would be longer than ``LONG_SUBJECT`` characters is
    ``PREFIX.c.%long.`` and the BLAKE2b digest of its UTF-8 (32 hexadecimal
    digits), and its message carries the channel: the payload is the channel's
    topic (its UTF-8 and 0xFF) then the body, checked against the digest on
    arrival (``carried``). The server cannot match a pattern inside a digest, so a
    pattern also subscribes to every long channel (``PREFIX.c.%long.*``) and the
    subscriber matches those itself (``interests``).
    A request to a channel travels under ``PREFIX.r.`` and the same tokens, outside
    the bus's stream (``PREFIX.c.>``), so JetStream neither stores nor acknowledges
    it and a server's no-responders status means that no subscriber has the
    channel. Its answers go to ``PREFIX.i.<inbox>.<correlation>``: the topic
    ``REPLY`` + ``<inbox>:<correlation>``, and an inbox subscribes to ``PREFIX.i.<inbox>.*``.
    """

    def __init__(self, prefix: str) -> None:
        tokens = prefix.split(".")
        if not all(tokens) or any(
            not token.isprintable() or " " in token or token in ("*", ">") for token in tokens
        ):
            raise errors.ConfigurationError(
                f"bus.nats.prefix {prefix!r} is not a NATS subject: dot-separated tokens "
                "without spaces or wildcards, such as 'shellbot' or 'team.bus'"
            )
        if len(prefix) > PREFIX_LIMIT or not prefix.isascii():
            raise errors.ConfigurationError(
                f"bus.nats.prefix is {len(prefix)} characters long: it takes at most "
                f"{PREFIX_LIMIT} ASCII characters, such as 'shellbot' or 'team.bus'"
            )
        self.channels = prefix + ".c."
        self.signals = prefix + ".s."
        self.everything = self.channels + ">"
        self.long = self.channels + LONG_TOKEN + "."
        self.every_long = self.long + "*"
        # A topic this short never makes a long subject (a byte takes 3 characters at most,
        # an empty piece 1): carries() answers those without a look-up.
        self.short_topic = (LONG_SUBJECT - len(self.channels)) // 3
        self.requests = prefix + ".r."
        self.inboxes = prefix + ".i."
        self._requests, self._channels = self.requests.encode(), self.channels.encode()
        self._subjects: dict[bytes, str] = {}
        self._topics: dict[bytes, bytes | None] = {}

    def subject(self, topic: bytes) -> str:
        """The subject of a channel's topic or of a signal's."""
        subject = self._subjects.get(topic)
        if subject is None:
            if topic[:1] == b"\xff":
                subject = self.signals + encode_token(topic[1:].decode("utf-8"))
            else:
                channel = topic[:-1].decode("utf-8")
                subject = self.channels + ".".join(map(encode_token, channel.split(".")))
                if len(subject) > LONG_SUBJECT:
                    subject = self.long + _digest(topic[:-1])
            if len(self._subjects) >= NAME_CACHE_LIMIT:
                self._subjects.clear()
            self._subjects[topic] = subject
        return subject

    def carries(self, topic: bytes) -> bool:
        """Whether a message on ``topic`` carries its channel: a long channel's."""
        return len(topic) > self.short_topic and self.subject(topic).startswith(self.long)

    def inbox_subject(self, reply_to: bytes) -> str:
        """The subject of the answers to a request that carries ``reply_to``."""
        inbox, _, correlation = reply_to.decode("ascii").partition(":")
        return f"{self.inboxes}{inbox}.{correlation}"

    def request_interest(self, interest: str) -> str:
        """The subject of requests matching a channel's ``interest`` subject."""
        return self.requests + interest[len(self.channels) :]

    def interests(self, prefix: bytes, pattern: str | None) -> tuple[str, ...]:
        """The subjects (with wildcards) a receiver subscribes to for
        ``Receiver.subscribe``: a pattern's, and every long channel's, which the server
        cannot match against the pattern (the subscriber does); an inbox's answers."""
        if prefix.startswith(REPLY):  # an inbox: every answer to its requests (or all)
            inbox = prefix[len(REPLY) :].decode("ascii").rstrip(":")
            return (f"{self.inboxes}{inbox}.*" if inbox else f"{self.inboxes}>",)
        if pattern is not None:
            tokens = pattern.split(".")
            subject = self.channels + ".".join(
                token if token in ("*", ">") else encode_token(token) for token in tokens
            )
            # A channel it matches has a subject at least as long: a long one.
            return (
                (subject, self.every_long) if len(subject) <= LONG_SUBJECT else (self.every_long,)
            )
        if not prefix:
            return (self.everything,)
        return (self.subject(prefix),)

    def filters(self, interests: Iterable[str]) -> list[str]:
        """The subjects of ``interests`` that no other one of them covers, sorted: a
        JetStream consumer refuses filters that overlap."""
        subjects = set(interests)
        # Only a subject with wildcards covers another; a channel's never holds one.
        wildcards = [subject for subject in subjects if "*" in subject or ">" in subject]
        return sorted(
            subject
            for subject in subjects
            if not any(other != subject and covers(other, subject) for other in wildcards)
        )

    def topic(self, raw_subject: bytes) -> bytes | None:
        """The topic a subject (as the server sent it) names, or None for one the rule
        never writes."""
        try:
            return self._topics[raw_subject]
        except KeyError:
            pass
        topic: bytes | None
        try:
            subject = raw_subject.decode("utf-8")
            if subject.startswith(self.inboxes):  # one subject per answer: not kept
                inbox, _, correlation = subject[len(self.inboxes) :].partition(".")
                return REPLY + f"{inbox}:{correlation}".encode("ascii")
            if subject.startswith(self.requests):
                subject = self.channels + subject[len(self.requests) :]
            if subject.startswith(self.long):
                digest = subject[len(self.long) :]
                valid = len(digest) == 2 * DIGEST_SIZE and digest == digest.lower()
                topic = CARRIED if valid and all(c in string.hexdigits for c in digest) else None
            elif subject.startswith(self.channels):
                pieces = subject[len(self.channels) :].split(".")
                topic = ".".join(map(decode_token, pieces)).encode("utf-8") + b"\xff"
            elif subject.startswith(self.signals):
                topic = b"\xff" + decode_token(subject[len(self.signals) :]).encode("utf-8")
            else:
                topic = None
        except ValueError:
            topic = None
        if len(self._topics) >= NAME_CACHE_LIMIT:
            self._topics.clear()
        self._topics[raw_subject] = topic
        return topic

    def carried(self, raw_subject: bytes, payload: bytes) -> tuple[bytes | None, bytes]:
        """The topic and body of a message on a long channel's subject (``topic`` said
        ``CARRIED``): the topic it carries, if its digest is the subject's; else None and
        the payload, dropped and counted by the subscriber."""
        end = payload.find(b"\xff") + 1
        if raw_subject.startswith(self._requests):  # a request to a long channel
            raw_subject = self._channels + raw_subject[len(self._requests) :]
        if end:
            topic = payload[:end]
            try:
                if self.subject(topic).encode() == raw_subject:  # one spelling, as for others
                    return topic, payload[end:]
            except UnicodeDecodeError:
                pass
        return None, payload


def _digest(channel: bytes) -> str:
    return hashlib.blake2b(channel, digest_size=DIGEST_SIZE).hexdigest()


def covers(interest: str, subject: str) -> bool:
    """Whether every subject that ``subject`` (with wildcards) matches, ``interest`` does."""
    wanted = interest.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or tokens[index] == ">":
            return False
        if token != "*" and token != tokens[index]:
            return False
    return len(tokens) == len(wanted)


def matches(interest: str, subject: str) -> bool:
    """NATS's own rule: ``*`` is one token, a last ``>`` one or more."""
    wanted = interest.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)
