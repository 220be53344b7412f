"""nats-py's client as the bus uses it: the one module that touches nats-py's internals.

nats-py gives each subscription a task and a queue of its own, so messages of
two subscriptions of one subscriber (two channels, or a channel and a
pattern) could come out of order; the bus keeps the order of each publisher
across channels. So ``OrderedClient`` hands the messages of the subscriptions
``take()`` names over where the client parses them, one by one, as the server
sent them. That overrides the client's ``_process_msg`` and reads
``Subscription._id`` and ``_pending_queue``; the server's INFO is read from
``_server_info``. Those internals are declared once, as typed protocols, and
listed in ``RELIED_ON``, which a test checks against the nats-py installed
(``surface_problems``), hence the range of nats-py versions the extra admits.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

Headers = dict[str, str] | None
# What a subscription taken over gets: (subject, payload), or for JetStream's
# deliveries and requests (subject, reply, payload, headers).
Deliver = Callable[[bytes, bytes], None]
DeliverRaw = Callable[[bytes, bytes, bytes, Headers], None]


class _SubscriptionInternals(Protocol):
    _id: int  # the sid the server's MSG lines carry
    _pending_queue: asyncio.Queue[Msg]  # what came before take(), in order


class _ClientInternals(Protocol):
    _server_info: dict[str, Any]  # the server's INFO, as last received

    async def _process_headers(self, headers: bytes) -> Headers: ...


def _internals(subscription: Subscription) -> _SubscriptionInternals:
    return cast(_SubscriptionInternals, subscription)


class OrderedClient(Client):
    """nats-py's client, handing the messages of the bus's subscriptions over in order."""

    def __init__(self) -> None:
        super().__init__()
        self._takers: dict[int, Deliver] = {}
        self._raw_takers: dict[int, DeliverRaw] = {}

    def take(self, subscription: Subscription, deliver: Deliver) -> None:
        """From now on, ``deliver(subject, payload)`` gets the messages of ``subscription``."""
        subscription_internals = _internals(subscription)
        self._takers[subscription_internals._id] = deliver
        queue = subscription_internals._pending_queue  # anything that came before, in order
        while not queue.empty():
            message = queue.get_nowait()
            deliver(message.subject.encode(), message.data)

    def take_raw(self, subscription: Subscription, deliver: DeliverRaw) -> None:
        """From now on, ``deliver(subject, reply, payload, headers)`` gets the messages of
        ``subscription`` (JetStream's deliveries and acknowledgements, requests)."""
        subscription_internals = _internals(subscription)
        self._raw_takers[subscription_internals._id] = deliver
        queue = subscription_internals._pending_queue
        while not queue.empty():
            message = queue.get_nowait()
            deliver(message.subject.encode(), message.reply.encode(), message.data, message.headers)

    def forget(self, subscription: Subscription) -> None:
        sid = _internals(subscription)._id
        self._takers.pop(sid, None)
        self._raw_takers.pop(sid, None)

    def server_info(self) -> dict[str, Any]:
        """The server's INFO as last received ({} before any)."""
        return getattr(cast(_ClientInternals, self), "_server_info", None) or {}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        deliver = self._takers.get(sid)
        if deliver is not None:
            deliver(subject, data)
            return
        raw = self._raw_takers.get(sid)
        if raw is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
        else:
            internals = cast(_ClientInternals, self)
            raw(
                subject, reply, data, await internals._process_headers(headers) if headers else None
            )


# -- what of nats-py this module relies on, checked by a test against the one installed


@dataclass(frozen=True)
class Relied:
    """A method of a nats-py class (its parameters after self, and whether it is a
    coroutine function), or an attribute of an instance (``parameters`` None)."""

    owner: str  # "Client", "Subscription" or "Msg"
    name: str
    parameters: tuple[str, ...] | None = None
    coroutine: bool = False


RELIED_ON = (
    Relied("Client", "_process_msg", ("sid", "subject", "reply", "data", "headers"), True),
    Relied("Client", "_process_headers", ("headers",), True),
    Relied("Client", "_server_info"),
    Relied("Subscription", "_id"),
    Relied("Subscription", "_pending_queue"),
    Relied("Msg", "subject"),
    Relied("Msg", "reply"),
    Relied("Msg", "data"),
    Relied("Msg", "headers"),
)


def nats_py_version() -> str:
    try:
        return importlib.metadata.version("nats-py")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def surface_problems(
    client: object,
    subscription: object,
    message: object,
    classes: dict[str, type] | None = None,
) -> list[str]:
    """One line for each part of ``RELIED_ON`` that the installed nats-py does not have
    as this module uses it: methods looked up on nats-py's classes (or ``classes``),
    attributes on a connected ``client``, one of its ``subscription``s and a
    ``message``. Empty when everything is there."""
    classes = classes or {"Client": Client, "Subscription": Subscription, "Msg": Msg}
    instances = {"Client": client, "Subscription": subscription, "Msg": message}
    version = nats_py_version()
    problems = []
    for relied in RELIED_ON:
        where = f"{relied.owner}.{relied.name}"
        if relied.parameters is None:
            if not hasattr(instances[relied.owner], relied.name):
                problems.append(
                    f"nats-py {version}: {where} is gone (an attribute _client reads); "
                    f"change shellbot._transports.nats._client, or keep nats-py to a version "
                    "the nats extra admits"
                )
            continue
        method = getattr(classes[relied.owner], relied.name, None)
        if method is None:
            problems.append(f"nats-py {version}: {where} is gone (_client overrides or calls it)")
            continue
        parameters = tuple(inspect.signature(method).parameters)[1:]
        if parameters != relied.parameters:
            problems.append(
                f"nats-py {version}: {where} now takes ({', '.join(parameters)}), "
                f"where _client relies on ({', '.join(relied.parameters)})"
            )
        if relied.coroutine and not inspect.iscoroutinefunction(method):
            problems.append(f"nats-py {version}: {where} is no longer a coroutine function")
    return problems
