"""CURVE on the ZeroMQ bus, over real sockets: a hub in a process of its own (a started
publisher holding the server secret), clients in this process, keys made by keygen."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shellbot import Context
from shellbot._keys import keygen
from shellbot.bus import Bus
from shellbot.errors import AuthenticationError, ConfigurationError, TimeoutError, TransportError

pytestmark = pytest.mark.embedded_hub  # the hub of the bus, held by a publisher

COUNT = 200


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """hub (the server), alice (authorized), mallory (not), impostor (another server)."""
    folder, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    paths: dict[str, Path] = {"authorized": authorized}
    for name in ("hub", "hubproc", "alice", "mallory", "impostor"):
        public, secret = keygen(name, folder)
        paths[name], paths[name + "_secret"] = public, secret
    (authorized / "alice.key").write_bytes(paths["alice"].read_bytes())
    return paths


def context(address: str, **curve: Any) -> Context:
    bus: dict[str, Any] = {"address": address, "linger": 0.0, "start_timeout": 5.0}
    bus["curve"] = {key: str(value) for key, value in curve.items()}
    return Context({"bus": bus})


def hub_context(address: str, keys: dict[str, Path]) -> Context:
    return context(
        address,
        server_key=keys["hub_secret"],
        client_key=keys["hubproc_secret"],
        authorized=keys["authorized"],
    )


# Each kind of client of the matrix: its bus.curve settings (None: a plain client).
CLIENTS: dict[str, dict[str, str] | None] = {
    "no key": None,
    "wrong server key": {"server_key": "impostor", "client_key": "alice_secret"},
    "unauthorized": {"server_key": "hub", "client_key": "mallory_secret"},
    "authorized": {"server_key": "hub", "client_key": "alice_secret"},
}


def client_context(address: str, keys: dict[str, Path], kind: str) -> Context:
    curve = CLIENTS[kind]
    if curve is None:  # a plain client's sends wait for a hub that never takes them
        plain = context(address)
        plain.set("bus.send_timeout", 0.5)
        return plain
    return context(address, **{key: keys[name] for key, name in curve.items()})


@pytest.fixture
def secured_hub(tcp_address: str, keys: dict[str, Path]) -> Any:
    """A started publisher holding a secured hub in its own process."""
    publisher = Bus(hub_context(tcp_address, keys)).publish()
    publisher.start()
    assert publisher.holds_hub
    yield publisher
    publisher.stop()


def _drain(subscriber: Any, seconds: float, refusals: list[str] | None = None) -> list[Any]:
    """What ``subscriber`` gets in ``seconds``; a refused one's errors go to ``refusals``."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = subscriber.get(block=True, timeout=min(left, 0.1))
        except AuthenticationError as refused:
            if refusals is None:
                raise
            refusals.append(str(refused))
            continue
        if message is not None:
            got.append(message)
    return got


def test_keygen_writes_a_certificate_pair_private_to_its_owner_and_never_overwrites(
    tmp_path: Path,
) -> None:
    import zmq.auth

    public, secret = keygen("alice", tmp_path / "k")
    assert (public.name, secret.name) == ("alice.key", "alice.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    public_key, no_secret = zmq.auth.load_certificate(public)
    same_public, secret_key = zmq.auth.load_certificate(secret)
    assert no_secret is None and secret_key is not None and public_key == same_public
    before = secret.read_bytes()
    with pytest.raises(ConfigurationError, match="never overwrites"):
        keygen("alice", tmp_path / "k")
    assert secret.read_bytes() == before


def test_keygen_command_refuses_to_overwrite(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "shellbot.cli", "keygen", "bob", "--dir", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE((tmp_path / "bob.key_secret").stat().st_mode) == 0o600
    again = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "exists" in again.stderr


def test_the_curve_settings_are_read_from_the_context(tcp_address: str) -> None:
    from shellbot._settings import BusSettings

    settings = BusSettings.from_context(context(tcp_address, server_key="s", client_key="c"))
    assert (settings.curve_server_key, settings.curve_client_key) == ("s", "c")
    assert settings.curve_authorized is None


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_only_an_authorized_subscriber_receives(
    secured_hub: Any, tcp_address: str, keys: dict[str, Path], kind: str
) -> None:
    witness = Bus(client_context(tcp_address, keys, "authorized")).subscribe("votes")
    assert witness.wait_ready(5.0)
    tested = Bus(client_context(tcp_address, keys, kind)).subscribe("votes")
    try:
        if kind == "authorized":
            assert tested.wait_ready(5.0)
        elif kind == "no key":
            # A plain client learns nothing of the hub: its wait runs out, as documented.
            started = time.monotonic()
            assert tested.wait_ready(1.0) is False
            assert time.monotonic() - started < 3.0
        else:
            with pytest.raises(AuthenticationError):
                tested.wait_ready(5.0)
        for number in range(COUNT):
            secured_hub.put("votes", number)
        seen = []
        deadline = time.monotonic() + 10.0
        while len(seen) < COUNT and time.monotonic() < deadline:
            message = witness.get(block=True, timeout=0.5)
            if message is not None:
                seen.append(message)
        assert seen == list(range(COUNT))
        refusals: list[str] = []
        got = _drain(tested, 0.5 if kind != "authorized" else 0.0, refusals)
        # A refused subscriber is told so by get() too, not only by wait_ready().
        assert bool(refusals) is (kind in ("wrong server key", "unauthorized"))
        if kind == "authorized":
            got += _drain(tested, 0.0)
            while len(got) < COUNT and (message := tested.get(True, 5.0)) is not None:
                got.append(message)
            assert got == list(range(COUNT))
        else:
            assert got == []
    finally:
        tested.close()
        witness.close()


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_only_an_authorized_publisher_delivers(
    secured_hub: Any, tcp_address: str, keys: dict[str, Path], kind: str
) -> None:
    witness = Bus(client_context(tcp_address, keys, "authorized")).subscribe(["votes", "end"])
    assert witness.wait_ready(5.0)
    tested = Bus(client_context(tcp_address, keys, kind)).publish()  # put() needs no start()
    try:
        try:
            for number in range(COUNT):
                tested.put("votes", number)
        except TimeoutError:  # a plain client: no hub takes its messages
            assert kind == "no key"
        secured_hub.put("end", "end")  # through the hub after whatever it let in
        got, ended = [], False
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not (ended and len(got) >= COUNT):
            message = witness.receive(block=True, timeout=0.2)
            if message is None:
                if ended:
                    break  # quiet since the end marker: nothing more comes
                continue
            if message.channel == "end":
                ended = True
            else:
                got.append(message.message)
        assert ended
        assert got == (list(range(COUNT)) if kind == "authorized" else [])
    finally:
        witness.close()


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("unauthorized", "refused this program's key"),
        ("wrong server key", "another server key"),
    ],
)
def test_start_and_wait_ready_say_who_refused_and_what_to_check(
    secured_hub: Any, tcp_address: str, keys: dict[str, Path], kind: str, says: str
) -> None:
    bus = Bus(client_context(tcp_address, keys, kind))
    publisher = bus.publish()
    began = time.monotonic()
    with pytest.raises(AuthenticationError, match=says) as raised:
        publisher.start()
    assert time.monotonic() - began < 5.0  # within bus.start_timeout, not at it
    assert isinstance(raised.value, TransportError)
    assert "CURVE" in str(raised.value)
    subscriber = bus.subscribe("votes")
    try:
        began = time.monotonic()
        with pytest.raises(AuthenticationError, match=r"subscriber side|inbound side"):
            subscriber.wait_ready(5.0)
        assert time.monotonic() - began < 5.0
    finally:
        subscriber.close()


def test_a_curve_client_of_a_plain_hub_is_told_so(tcp_address: str, keys: dict[str, Path]) -> None:
    plain = Bus(context(tcp_address)).publish()
    plain.start()
    try:
        subscriber = Bus(client_context(tcp_address, keys, "authorized")).subscribe("votes")
        try:
            with pytest.raises(AuthenticationError, match=r"does not speak CURVE|a plain hub"):
                subscriber.wait_ready(5.0)
        finally:
            subscriber.close()
    finally:
        plain.stop()


def test_a_process_without_the_hub_secret_never_holds_the_hub(
    tcp_address: str, keys: dict[str, Path]
) -> None:
    settings = context(tcp_address, server_key=keys["hub"], client_key=keys["alice_secret"])
    settings.set("bus.start_timeout", 1.0)
    publisher = Bus(settings).publish()
    with pytest.raises(TimeoutError, match="cannot hold the hub"):
        publisher.start()  # no hub runs, and this one has the hub's public key only
    assert not publisher.holds_hub


def test_the_authorized_folder_is_read_again_when_it_changes(
    secured_hub: Any, tcp_address: str, keys: dict[str, Path]
) -> None:
    refused = Bus(client_context(tcp_address, keys, "unauthorized")).subscribe("votes")
    try:
        with pytest.raises(AuthenticationError):
            refused.wait_ready(5.0)
    finally:
        refused.close()
    (keys["authorized"] / "mallory.key").write_bytes(keys["mallory"].read_bytes())
    # libzmq never retries a refused handshake: a new program (new settings, new sockets)
    again = client_context(tcp_address, keys, "unauthorized")
    again.set("bus.linger", 0.1)
    admitted = Bus(again).subscribe("votes")
    try:
        assert admitted.wait_ready(5.0)
    finally:
        admitted.close()


def test_curve_settings_on_another_scheme_are_refused(tmp_path: Path, keys: Any) -> None:
    address = f"ipc://{tmp_path}/bus"
    with pytest.raises(ConfigurationError, match="tcp:// addresses only"):
        Bus(context(address, server_key=keys["hub"], client_key=keys["alice_secret"])).subscribe(
            "votes"
        )


def test_the_hub_command_needs_the_server_secret(tcp_address: str, keys: Any) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "shellbot.cli", "hub", "--address", tcp_address],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SHELLBOT_BUS_CURVE_SERVER_KEY": str(keys["hub"])},
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "cannot hold the hub" in run.stderr


def _relayed(publisher: Any, subscriber: Any, channel: str, seconds: float = 10.0) -> bool:
    """Puts on ``channel`` until ``subscriber`` gets one of them (bounded)."""
    deadline = time.monotonic() + seconds
    number = 0
    while time.monotonic() < deadline:
        number += 1
        publisher.put(channel, number)
        if subscriber.get(block=True, timeout=0.1) is not None:
            return True
    return False


def test_a_takeover_hub_with_the_same_server_key_is_transparent_to_clients(
    tcp_address: str, keys: dict[str, Path]
) -> None:
    first, second = Bus(hub_context(tcp_address, keys)).publish(), None
    first.start()
    try:
        second = Bus(hub_context(tcp_address, keys)).publish()
        second.start()
        assert first.holds_hub and not second.holds_hub
        client = Bus(client_context(tcp_address, keys, "authorized"))
        subscriber = client.subscribe("votes")
        assert subscriber.wait_ready(5.0)
        sender = client.publish()
        assert _relayed(sender, subscriber, "votes")
        assert first.stop(timeout=5.0)
        deadline = time.monotonic() + 5.0
        while not second.holds_hub and time.monotonic() < deadline:
            second.join(0.05)
        assert second.holds_hub
        assert subscriber.wait_ready(5.0)  # the same clients, sockets and settings
        assert _relayed(sender, subscriber, "votes")
        subscriber.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_takeover_hub_with_another_server_key_is_reported_to_clients(
    tcp_address: str, keys: dict[str, Path]
) -> None:
    genuine = Bus(hub_context(tcp_address, keys)).publish()
    genuine.start()
    client = Bus(client_context(tcp_address, keys, "authorized"))
    subscriber = client.subscribe("votes")
    waiting = client.subscribe("votes")
    impostor = None
    try:
        assert subscriber.wait_ready(5.0) and waiting.wait_ready(5.0)
        assert genuine.stop(timeout=5.0)
        impostor = Bus(
            context(
                tcp_address,
                server_key=keys["impostor_secret"],
                client_key=keys["hubproc_secret"],
                authorized=keys["authorized"],
            )
        ).publish()
        impostor.start()
        assert impostor.holds_hub
        began = time.monotonic()
        with pytest.raises(AuthenticationError, match="another server key"):
            subscriber.wait_ready(5.0)
        assert time.monotonic() - began < 5.0
        # A subscriber that only reads hears it too, at the end of a wait.
        began = time.monotonic()
        with pytest.raises(AuthenticationError, match="another server key"):
            while time.monotonic() - began < 10.0:
                waiting.get(block=True, timeout=0.5)
        assert time.monotonic() - began < 5.0
        # A publisher's put() hears it once its queue is full, after bus.send_timeout.
        small = client_context(tcp_address, keys, "authorized")
        small.set("bus.send_high_water_mark", 10)
        small.set("bus.send_timeout", 0.5)
        sender = Bus(small).publish()
        began = time.monotonic()
        with pytest.raises(AuthenticationError, match="another server key"):
            for number in range(1000):
                sender.put("votes", number)
        assert time.monotonic() - began < 5.0
    finally:
        subscriber.close()
        waiting.close()
        genuine.stop()
        if impostor is not None:
            impostor.stop()
