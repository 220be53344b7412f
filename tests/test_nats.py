"""nats:// against what a real deployment meets: foreign clients, limits, credentials, TLS.

Every test runs nats-server processes of its own (``tests/_nats.py``), stopped
after it whatever happened. Foreign clients are plain nats-py clients, or a raw
socket where the client library would refuse to send what the test needs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest
from _nats import NatsNode, make_certificates, tls_config
from conftest import eventually

from shellbot import Context, errors
from shellbot._codec import HEADER
from shellbot._settings import BusSettings, redacted
from shellbot._transports import transport_for
from shellbot.bus import Bus, Subscriber
from shellbot.errors import ConfigurationError, MessageTooLarge, TransportError


def bus_at(address: str, **settings: Any) -> Bus:
    return Bus(Context({"bus": {"address": address, **settings}}))


def with_credentials(url: str, credentials: str) -> str:
    return url.replace("nats://", f"nats://{credentials}", 1)


def collect(subscriber: Subscriber, last: Any, timeout: float = 10.0) -> list[Any]:
    """The messages up to and with ``last``; fails after ``timeout`` seconds."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = subscriber.get(block=True, timeout=left)
        if message is not None:
            got.append(message)
            if message == last:
                return got
    raise AssertionError(f"{last!r} did not come within {timeout} s; got {got[-5:]!r}")


def foreign_publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publishes raw payloads from a plain nats-py client, and waits for the server's
    answer to a ping after them: the server has routed them all when this returns."""

    async def main() -> None:
        client = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
        try:
            for subject, payload in messages:
                await client.publish(subject, payload)
            await client.flush(5)
        finally:
            await client.close()

    asyncio.run(main())


# -- bad input -------------------------------------------------------------------------


def garbage(number: int) -> list[tuple[str, bytes]]:
    """One of each bad thing on our subjects; a kind's header numbers on from 1, as a
    sender would, so that only what is dropped (and no gap) is counted."""
    return [
        ("shellbot.c.news", b"short"),  # shorter than the header
        ("shellbot.c.news", HEADER.pack(701, number) + b'"\xff"'),  # bad UTF-8
        ("shellbot.c.news", HEADER.pack(702, number) + b"{not json"),
        ("shellbot.c.news", HEADER.pack(703, number) + b'"' + b"x" * 1200 + b'"'),  # > 1000
        # subjects our naming never writes: not hex, cut short, an encoded safe letter
        ("shellbot.c.%ZZ", HEADER.pack(704, number) + b"1"),
        ("shellbot.c.a%2", HEADER.pack(705, number) + b"1"),
        ("shellbot.c.A%41", HEADER.pack(706, number) + b"1"),
    ]


ON_NEWS = 4  # of each round of garbage(), those on shellbot.c.news


def test_garbage_from_a_foreign_client_is_dropped_and_counted_while_good_messages_flow(
    servers: Callable[..., NatsNode],
) -> None:
    node = servers()
    bus = bus_at(node.url, max_message_size=1000)
    publisher = bus.publish()
    rounds, good = 200, 2000
    failures: list[BaseException] = []

    def flood() -> None:
        try:
            foreign_publish(node.url, [m for n in range(1, rounds + 1) for m in garbage(n)])
        except BaseException as error:
            failures.append(error)

    with bus.subscribe("news") as news, bus.subscribe("") as everything:
        assert news.wait_ready(5.0) and everything.wait_ready(5.0)
        foreign = threading.Thread(target=flood)
        foreign.start()
        for number in range(good):
            publisher.put("news", number)
        foreign.join(30.0)
        assert not foreign.is_alive() and not failures, failures
        # Every foreign message reached the server before this one left.
        publisher.put("news", "end")
        for subscriber in (news, everything):
            assert collect(subscriber, "end") == [*range(good), "end"]
        assert news.stats == {"received": good + 1, "dropped": ON_NEWS * rounds, "missed": 0}
        assert everything.stats == {
            "received": good + 1,
            "dropped": len(garbage(1)) * rounds,
            "missed": 0,
        }


def raw_publish(port: int, subject: str, payload: bytes) -> bytes:
    """A client that checks nothing: PUB straight on a socket; what the server answered
    until it closed the connection (or 5 s passed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw:
        raw.recv(4096)  # INFO
        raw.sendall(
            b'CONNECT {"verbose":false,"pedantic":false}\r\n'
            + f"PUB {subject} {len(payload)}\r\n".encode()
            + payload
            + b"\r\n"
        )
        answer = b""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                chunk = raw.recv(4096)
            except TimeoutError:  # the socket's, not the bus's
                break
            except ConnectionResetError:
                return answer
            if not chunk:
                return answer  # closed by the server
            answer += chunk
        raise AssertionError(f"the server kept the connection open; it said {answer!r}")


def test_a_payload_over_the_servers_max_payload_never_reaches_a_subscriber(
    servers: Callable[..., NatsNode],
) -> None:
    node = servers("max_payload: 2048")
    bus = bus_at(node.url)
    publisher = bus.publish()
    big = HEADER.pack(9, 1) + b'"' + b"x" * 3000 + b'"'
    with bus.subscribe("") as everything:
        assert everything.wait_ready(5.0)
        publisher.put("news", 1)
        assert collect(everything, 1) == [1]
        with pytest.raises(nats.errors.MaxPayloadError):  # nats-py checks before sending
            foreign_publish(node.url, [("shellbot.c.news", big)])
        answer = raw_publish(node.port, "shellbot.c.news", big)  # the server refuses too
        assert b"-ERR 'Maximum Payload Violation'" in answer
        publisher.put("news", 2)
        assert collect(everything, 2) == [2]
        assert everything.stats == {"received": 2, "dropped": 0, "missed": 0}


def test_our_put_over_the_servers_max_payload_raises_at_the_call(
    servers: Callable[..., NatsNode],
) -> None:
    node = servers("max_payload: 2048")
    bus = bus_at(node.url, max_message_size=100_000)  # above the server's limit
    publisher = bus.publish()
    with bus.subscribe("news") as news:
        assert news.wait_ready(5.0)  # this process is connected: it knows the server's limit
        with pytest.raises(MessageTooLarge, match=r"over the NATS server's max_payload \(2048\)"):
            publisher.put("news", "x" * 3000)
        # Messages that fit one by one, put faster than they leave: joined into one NATS
        # message they would not fit, so runs stay within the server's limit.
        for number in range(300):
            publisher.put("news", [number, "y" * 600])
        publisher.put("news", "end")
        assert collect(news, "end") == [*([n, "y" * 600] for n in range(300)), "end"]
        assert news.stats == {"received": 301, "dropped": 0, "missed": 0}


def test_a_message_queued_while_away_and_too_large_for_the_server_back_is_the_only_one_lost(
    servers: Callable[..., NatsNode],
) -> None:
    node = servers()
    bus = bus_at(node.url, max_message_size=100_000)
    publisher = bus.publish()
    client = transport_for(BusSettings(address=node.url, max_message_size=100_000))
    with bus.subscribe("news") as news:
        assert news.wait_ready(5.0)
        node.stop()
        assert eventually(lambda: not client.connection.client.is_connected)  # type: ignore[attr-defined]
        # The server comes back with a smaller limit than it had when these were put.
        node.config.write_text(node.config.read_text() + "max_payload: 2048\n")
        publisher.put("news", 1)
        publisher.put("news", "x" * 3000)
        publisher.put("news", 3)
        node.start()
        # Nothing is put after these: the one the server refuses must not hold the rest.
        assert collect(news, 3) == [1, 3]
        assert news.stats["missed"] == 1  # the refused one: a gap, counted
        with pytest.raises(MessageTooLarge):  # the new limit is known now
            publisher.put("news", "x" * 3000)


def test_readiness_on_a_single_server_takes_no_second_connection(
    servers: Callable[..., NatsNode],
) -> None:
    node = servers()
    with bus_at(node.url).subscribe("news") as news:  # asked before this process connected
        assert news.wait_ready(5.0)
        assert node.connections() == 1  # no probe connection to the server we are on


# -- credentials -----------------------------------------------------------------------

# kind: (server configuration, the right credentials, wrong ones and none)
AUTH = {
    "token": ('authorization { token: "s3cret" }', "s3cret@", ["wrong@", ""]),
    "user": ("authorization { user: a, password: b }", "a:b@", ["a:wrong@", "nobody:b@", ""]),
}


@pytest.mark.parametrize("kind", sorted(AUTH))
def test_the_right_credentials_deliver_everything(
    servers: Callable[..., NatsNode], kind: str
) -> None:
    extra, right, _ = AUTH[kind]
    node = servers(extra)
    bus = bus_at(with_credentials(node.url, right))
    publisher = bus.publish()
    publisher.start()
    try:
        with bus.subscribe("news") as news:
            assert news.wait_ready(5.0)
            for number in range(100):
                publisher.put("news", number)
            assert collect(news, 99) == list(range(100))
            assert news.stats == {"received": 100, "dropped": 0, "missed": 0}
    finally:
        assert publisher.stop()


@pytest.mark.parametrize(
    ("kind", "wrong"), [(kind, wrong) for kind in sorted(AUTH) for wrong in AUTH[kind][2]]
)
def test_wrong_or_no_credentials_fail_at_once_and_deliver_nothing(
    servers: Callable[..., NatsNode], kind: str, wrong: str
) -> None:
    extra, right, _ = AUTH[kind]
    node = servers(extra)
    good = bus_at(with_credentials(node.url, right))
    refused = bus_at(with_credentials(node.url, wrong))  # start_timeout: the default 10 s
    said = "refused this program's credentials" if wrong else "requires credentials"
    with good.subscribe("") as watcher:
        assert watcher.wait_ready(5.0)
        publisher = refused.publish()
        # Put before the refusal is known: queued, and never sent.
        for number in range(100):
            try:
                publisher.put("news", number)
            except TransportError:
                break
        started = time.monotonic()
        with pytest.raises(TransportError, match=said) as failure:
            publisher.start()
        assert time.monotonic() - started < 3.0
        assert not isinstance(failure.value, errors.TimeoutError)
        assert "authorization violation" in str(failure.value)
        if "wrong" in wrong:
            assert "wrong" not in str(failure.value)  # the secret is not repeated
        with refused.subscribe("news") as inbox:
            started = time.monotonic()
            with pytest.raises(TransportError, match=said):
                inbox.wait_ready(5.0)
            assert time.monotonic() - started < 3.0
            with pytest.raises(TransportError, match=said):
                inbox.get(block=True, timeout=1.0)
        with pytest.raises(TransportError, match=said):
            publisher.put("news", "after")
        good.publish().put("news", "marker")
        assert collect(watcher, "marker") == ["marker"]  # alone: nothing came from the other
        assert watcher.stats["received"] == 1


def test_credentials_never_show_in_what_the_bus_says() -> None:
    assert redacted("nats://a:b@h:1,nats://h2:2, nats://tok@h3") == (
        "nats://a:***@h:1,nats://h2:2, nats://***@h3"
    )
    assert redacted("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
    with pytest.raises(ConfigurationError) as bad:
        BusSettings.from_context(Context({"bus": {"address": "nats://a:s3cret@h:1,h2:x"}}))
    assert "s3cret" not in str(bad.value) and "a:***@h:1" in str(bad.value)


# -- nkeys and JWT credentials ---------------------------------------------------------


def new_key(prefix: int) -> tuple[bytes, Any]:
    """A new nkey: its seed, and its key pair."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(issuer: Any, subject: str, claims: dict[str, Any]) -> str:
    """A NATS JWT: ``claims`` about ``subject``, signed by ``issuer``'s key."""
    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "sub": subject,
        "nats": claims,
    }
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode()
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    text = f"{head}.{_b64(json.dumps(body).encode())}"
    return f"{text}.{_b64(issuer.sign(text.encode()))}"


def test_an_nkey_seed_file_signs_in(servers: Callable[..., NatsNode], tmp_path: Path) -> None:
    seed, pair = new_key(nkeys.PREFIX_BYTE_USER)
    node = servers(f"authorization {{ users: [ {{ nkey: {pair.public_key.decode()} }} ] }}")
    (tmp_path / "user.nk").write_bytes(seed + b"\n")
    other_seed, _ = new_key(nkeys.PREFIX_BYTE_USER)
    (tmp_path / "other.nk").write_bytes(other_seed)

    bus = bus_at(node.url, nats={"nkey_seed": str(tmp_path / "user.nk")})
    with bus.subscribe("news") as news:
        assert news.wait_ready(5.0)
        bus.publish().put("news", "signed")
        assert collect(news, "signed") == ["signed"]
    stranger = bus_at(node.url, nats={"nkey_seed": str(tmp_path / "other.nk")})
    with stranger.subscribe("news") as news, pytest.raises(TransportError, match="refused"):
        news.wait_ready(5.0)


def test_a_credentials_file_signs_in(servers: Callable[..., NatsNode], tmp_path: Path) -> None:
    _, operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user = new_key(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1}
    account_jwt = signed_jwt(
        operator,
        account.public_key.decode(),
        {"type": "account", "version": 2, "limits": {**unlimited, "data": -1, "payload": -1}},
    )
    (tmp_path / "operator.jwt").write_text(
        signed_jwt(operator, operator.public_key.decode(), {"type": "operator", "version": 2})
    )
    node = servers(
        f'operator: "{tmp_path / "operator.jwt"}"\nresolver: MEMORY\n'
        f'resolver_preload: {{ {account.public_key.decode()}: "{account_jwt}" }}'
    )
    user_jwt = signed_jwt(
        account,
        user.public_key.decode(),
        {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    )
    creds = tmp_path / "user.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )
    bus = bus_at(node.url, nats={"credentials": str(creds)})
    publisher = bus.publish()
    publisher.start()
    try:
        with bus.subscribe("news") as news:
            assert news.wait_ready(5.0)
            publisher.put("news", "with a JWT")
            assert collect(news, "with a JWT") == ["with a JWT"]
    finally:
        assert publisher.stop()
    with bus_at(node.url).subscribe("news") as news, pytest.raises(TransportError):
        news.wait_ready(5.0)  # without: refused


def test_a_setting_naming_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    for key in ("credentials", "nkey_seed", "tls_ca", "tls_cert"):
        bus = bus_at("nats://127.0.0.1:1", nats={key: str(tmp_path / "missing")})
        with pytest.raises(ConfigurationError, match=f"bus.nats.{key} names"):
            bus.subscribe("news")
    (tmp_path / "key.pem").write_text("")
    bus = bus_at("nats://127.0.0.1:1", nats={"tls_key": str(tmp_path / "key.pem")})
    with pytest.raises(ConfigurationError, match=r"tls_key is the key of bus\.nats\.tls_cert"):
        bus.subscribe("news")


def test_a_missing_nkeys_package_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user.nk").write_bytes(new_key(nkeys.PREFIX_BYTE_USER)[0])
    monkeypatch.setitem(__import__("sys").modules, "nkeys", None)  # import nkeys fails
    bus = bus_at("nats://127.0.0.1:1", nats={"nkey_seed": str(tmp_path / "user.nk")})
    with pytest.raises(ConfigurationError, match="need the nkeys package"):
        bus.subscribe("news")


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificates")
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_tls_with_the_authority_delivers_and_without_it_fails_clearly(
    servers: Callable[..., NatsNode], certificates: Path
) -> None:
    node = servers(tls_config(certificates, verify=False))
    bus = bus_at(node.url, nats={"tls_ca": str(certificates / "ca.pem")})
    publisher = bus.publish()
    publisher.start()
    try:
        with bus.subscribe("news") as news:
            assert news.wait_ready(5.0)
            publisher.put("news", "over TLS")
            assert collect(news, "over TLS") == ["over TLS"]
    finally:
        assert publisher.stop()

    untrusting = bus_at(node.url).publish()
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"does not trust .*set bus\.nats\.tls_ca"):
        untrusting.start()
    assert time.monotonic() - started < 3.0


def test_tls_client_certificates_reach_the_server(
    servers: Callable[..., NatsNode], certificates: Path
) -> None:
    node = servers(tls_config(certificates, verify=True))
    authority = {"tls_ca": str(certificates / "ca.pem")}
    bus = bus_at(
        node.url,
        nats={
            **authority,
            "tls_cert": str(certificates / "client.pem"),
            "tls_key": str(certificates / "client.key"),
        },
    )
    with bus.subscribe("news") as news:
        assert news.wait_ready(5.0)
        bus.publish().put("news", "known client")
        assert collect(news, "known client") == ["known client"]
    # Without a certificate of its own, the server hangs up on it (nats-py sees a TLS
    # alert, a reset or a broken pipe): the server's INFO told why.
    anonymous = bus_at(node.url, nats=authority).publish()
    started = time.monotonic()
    with pytest.raises(TransportError, match="asks for a TLS client certificate"):
        anonymous.start()
    assert time.monotonic() - started < 3.0
