"""The nats-py surface the transport's ``_client`` relies on (its internals), checked
against the nats-py installed: an upgrade that moves it fails here, saying what moved,
rather than as subscribers that wait forever."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

pytest.importorskip("nats")

from _nats import NatsNode
from nats.aio.client import Client
from nats.aio.msg import Msg

import shellbot
from shellbot._transports.nats._client import (
    RELIED_ON,
    OrderedClient,
    nats_py_version,
    surface_problems,
)


def _connected_parts(url: str) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """The problems found on a client connected to ``url``, one of its subscriptions
    and a message it received; and what ``take()`` handed over after that."""

    async def run() -> tuple[list[str], list[tuple[bytes, bytes]]]:
        client = OrderedClient()
        await client.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            subscription = await client.subscribe("surface.>")
            await client.publish("surface.first", b"1")
            message = await subscription.next_msg(timeout=5)
            problems = surface_problems(client, subscription, message)
            # What came before take() is handed over first, in order, then what follows.
            await client.publish("surface.second", b"2")
            await client.flush(5)
            handed: list[tuple[bytes, bytes]] = []
            client.take(subscription, lambda subject, data: handed.append((subject, data)))
            await client.publish("surface.third", b"3")
            await client.flush(5)
            for _ in range(100):
                if len(handed) >= 2:
                    break
                await asyncio.sleep(0.05)
            return problems, handed
        finally:
            await client.close()

    return asyncio.run(asyncio.wait_for(run(), 20))


def test_the_installed_nats_py_has_what_the_client_relies_on(nats_server: NatsNode) -> None:
    problems, handed = _connected_parts(nats_server.url)
    assert not problems, "\n".join(problems)
    assert handed == [(b"surface.second", b"2"), (b"surface.third", b"3")]


def test_a_moved_method_or_attribute_is_said_with_the_version_tried() -> None:
    class Renamed(Client):  # as a nats-py that renamed a parameter would have it
        async def _process_msg(self, sid, subject, reply, payload, headers):  # type: ignore[no-untyped-def, override]
            pass

    message = Msg(_client=None)  # type: ignore[arg-type]
    problems = surface_problems(
        client=Client(),
        subscription=object(),  # a subscription without _id nor _pending_queue
        message=message,
        classes={"Client": Renamed, "Subscription": object, "Msg": Msg},
    )
    version = nats_py_version()
    assert all(problem.startswith(f"nats-py {version}: ") for problem in problems)
    said = "\n".join(problems)
    assert "Client._process_msg now takes (sid, subject, reply, payload, headers)" in said
    assert "Subscription._id is gone" in said
    assert "Subscription._pending_queue is gone" in said
    assert len(problems) == 3, said


def test_no_other_module_of_the_bus_touches_those_internals() -> None:
    """``_client`` is the one place: anywhere else, a use would escape the pin above.
    (The benchmark's bare nats-py side, which measures nats-py alone, is not the bus.)"""
    source = Path(shellbot.__file__).parent
    internals = {relied.name for relied in RELIED_ON if relied.name.startswith("_")}
    found = [
        f"{path.relative_to(source)}: {name}"
        for path in sorted(source.rglob("*.py"))
        if path.name != "_client.py" and "bench" not in path.relative_to(source).parts
        for name in internals
        if re.search(rf"\.{name}\b|['\"]{name}['\"]", path.read_text())
    ]
    assert not found, found
    assert internals == {
        "_process_msg",
        "_process_headers",
        "_server_info",
        "_id",
        "_pending_queue",
    }
