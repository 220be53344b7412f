"""What the ZeroMQ hub does for requests and their answers (see ``_requests``).

A request is a message like any other to the hub, routed and joined in runs as
messages are; only when no receiver wants its channel does the hub look inside, and
answer each request of the run with the empty body that says no one subscribes. An
answer is a bus signal on ``REPLY`` + its reply address; the hub knows the inboxes
subscribed (their ``REPLY`` prefixes come up through XPUB like any subscription), and
counts an answer whose inbox is gone instead of sending it to no one.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..._codec import REPLY, REQUEST_MARK_BYTE, request_reply_to, split_request


def reply_addresses(topic: bytes, run: list[bytes]) -> Iterator[bytes]:
    """The reply addresses of the requests in a run (its first message whole, in the
    one-frame form, then the JSON texts of the others)."""
    first = request_reply_to(run[0][len(topic) :])
    if first is not None:
        yield first
    for text in run[1:]:
        if text[:1] and text[0] == REQUEST_MARK_BYTE:
            request = split_request(text)
            if request is not None:
                yield request[0]


def inbox_of(reply_topic: bytes) -> bytes:
    """The subscription prefix of the inbox an answer's topic names (``REPLY`` + id + ``:``)."""
    colon = reply_topic.find(b":", len(REPLY))
    return reply_topic if colon < 0 else reply_topic[: colon + 1]
