"""How the bus names things on NATS: channels and signals as subjects, both ways.

The rule is ``Naming``'s docstring; it is reversible and has one spelling per
channel, so a subject it never writes names no channel.
"""

from __future__ import annotations

import string

from .. import errors
from .._codec import REPLY

NAME_CACHE_LIMIT = 100_000  # subjects whose topics are remembered


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
        self.channels = prefix + ".c."
        self.signals = prefix + ".s."
        self.everything = self.channels + ">"
        self.requests = prefix + ".r."
        self.inboxes = prefix + ".i."
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
            if len(self._subjects) >= NAME_CACHE_LIMIT:
                self._subjects.clear()
            self._subjects[topic] = subject
        return subject

    def inbox_subject(self, reply_to: bytes) -> str:
        """The subject of the answers to a request that carries ``reply_to``."""
        inbox, _, correlation = reply_to.decode("ascii").partition(":")
        return f"{self.inboxes}{inbox}.{correlation}"

    def request_interest(self, interest: str) -> str:
        """The subject of requests matching a channel's ``interest`` subject."""
        return self.requests + interest[len(self.channels) :]

    def interest(self, prefix: bytes, pattern: str | None) -> str:
        """The subject (with wildcards) a receiver subscribes to for ``Receiver.subscribe``."""
        if prefix.startswith(REPLY):  # an inbox: every answer to its requests (or all)
            inbox = prefix[len(REPLY) :].decode("ascii").rstrip(":")
            return f"{self.inboxes}{inbox}.*" if inbox else f"{self.inboxes}>"
        if pattern is not None:
            tokens = pattern.split(".")
            return self.channels + ".".join(
                token if token in ("*", ">") else encode_token(token) for token in tokens
            )
        if not prefix:
            return self.everything
        return self.subject(prefix)

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
            if subject.startswith(self.channels):
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
