"""The hub's authorized folder under bad files and removals, and secret keys that others
may read: real sockets, a secured hub in this process (its warnings are this process's
log records), clients in this process."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from shellbot import Context
from shellbot._keys import keygen
from shellbot._settings import BusSettings
from shellbot.bus import Bus
from shellbot.errors import AuthenticationError, ConfigurationError

pytestmark = pytest.mark.embedded_hub


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """hub (the server), hubproc (the hub's own process), alice and bob (authorized)."""
    folder, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    paths: dict[str, Path] = {"authorized": authorized}
    for name in ("hub", "hubproc", "alice", "bob", "carol"):
        public, secret = keygen(name, folder)
        paths[name], paths[name + "_secret"] = public, secret
    for name in ("alice", "bob"):
        (authorized / f"{name}.key").write_bytes(paths[name].read_bytes())
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


def client(address: str, keys: dict[str, Path], name: str) -> Bus:
    return Bus(context(address, server_key=keys["hub"], client_key=keys[name + "_secret"]))


@pytest.fixture
def local_hub(tcp_address: str, keys: dict[str, Path]) -> Iterator[Any]:
    """A secured hub in this process, opened at once (its folder as the test left it)."""
    from shellbot._transports.zmq.hub import open_hub

    hubs: list[Any] = []

    def start() -> Any:
        hub = open_hub(
            zmq.Context.instance(), BusSettings.from_context(hub_context(tcp_address, keys))
        )
        assert hub is not None
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.close(0.0)


def _round_trip(address: str, keys: dict[str, Path], name: str, timeout: float = 10.0) -> bool:
    """A subscriber and a publisher with ``name``'s key: the subscriber gets one of them."""
    bus = client(address, keys, name)
    subscriber = bus.subscribe("votes")
    try:
        if not subscriber.wait_ready(5.0):
            return False
        publisher = bus.publish()
        deadline = time.monotonic() + timeout
        number = 0
        while time.monotonic() < deadline:
            number += 1
            publisher.put("votes", number)
            if subscriber.get(block=True, timeout=0.1) is not None:
                return True
        return False
    finally:
        subscriber.close()


def _make_garbage(path: Path, keys: dict[str, Path]) -> None:
    path.write_bytes(b"\x00\xff this is not a certificate \x80\n")


def _make_bad_key(path: Path, keys: dict[str, Path]) -> None:
    path.write_text('metadata\ncurve\n    public-key = "much too short"\n')


def _make_secret(path: Path, keys: dict[str, Path]) -> None:
    path.write_bytes(keys["carol_secret"].read_bytes())


def _make_empty(path: Path, keys: dict[str, Path]) -> None:
    path.write_bytes(b"")


def _make_folder(path: Path, keys: dict[str, Path]) -> None:
    path.mkdir()


def _make_unreadable(path: Path, keys: dict[str, Path]) -> None:
    if os.geteuid() == 0:  # root reads a mode 000 file: a link to itself fails for root too
        path.symlink_to(path.name)
    else:
        path.write_bytes(keys["carol"].read_bytes())
        path.chmod(0)


def _make_dangling(path: Path, keys: dict[str, Path]) -> None:
    path.symlink_to(path.parent / "gone.key")


def _make_fifo(path: Path, keys: dict[str, Path]) -> None:
    os.mkfifo(path)  # opening it for reading would wait for a writer


# Each kind of bad file: how it is made, what its file is called, and what the warning says.
BAD_FILES: dict[str, tuple[Callable[[Path, dict[str, Path]], None], str, str]] = {
    "garbage": (_make_garbage, "garbage.key", "no public-key line"),
    "bad public key": (_make_bad_key, "short.key", "not a CURVE key"),
    "secret key named .key": (_make_secret, "carol.key", "holds a secret key"),
    "secret certificate": (_make_secret, "carol.key_secret", "secret certificate"),
    "empty": (_make_empty, "empty.key", "empty"),
    "folder": (_make_folder, "folder.key", "a folder"),
    "unreadable": (_make_unreadable, "unreadable.key", "cannot be read"),
    "dangling link": (_make_dangling, "dangling.key", "cannot be read"),
    "fifo": (_make_fifo, "fifo.key", "not a regular file"),
    "another name": (_make_garbage, "README", "not named NAME.key"),
}


def _warnings(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and str(path) in record.getMessage()
    ]


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_file_in_the_authorized_folder_is_skipped_with_a_warning_the_others_load(
    local_hub: Any,
    tcp_address: str,
    keys: dict[str, Path],
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make, name, says = BAD_FILES[kind]
    bad = keys["authorized"] / name
    make(bad, keys)
    caplog.set_level(logging.WARNING, logger="shellbot.bus")
    local_hub()
    assert _round_trip(tcp_address, keys, "alice")
    first = _warnings(caplog, bad)
    assert len(first) == 1 and says in first[0], first
    # A reload (the folder changed: a key admitted, another bad file) behaves the same.
    caplog.clear()
    (keys["authorized"] / "carol-public.key").write_bytes(keys["carol"].read_bytes())
    second_bad = keys["authorized"] / "second.key"
    second_bad.write_text("not a certificate either\n")
    assert _round_trip(tcp_address, keys, "carol")
    assert _round_trip(tcp_address, keys, "bob")
    again = _warnings(caplog, bad)
    assert len(again) == 1 and says in again[0], again
    assert any("no public-key line" in line for line in _warnings(caplog, second_bad))


def test_a_folder_of_bad_files_only_lets_in_the_hubs_own_process(
    local_hub: Any, tcp_address: str, keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    for path in keys["authorized"].iterdir():
        path.write_text("garbage\n")
    caplog.set_level(logging.WARNING, logger="shellbot.bus")
    local_hub()
    assert _round_trip(tcp_address, keys, "hubproc")
    subscriber = client(tcp_address, keys, "alice").subscribe("votes")
    try:
        with pytest.raises(AuthenticationError, match="refused this program's key"):
            subscriber.wait_ready(5.0)
    finally:
        subscriber.close()
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 2


# -- secret keys that others may read ----------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
@pytest.mark.parametrize("setting", ["server_key", "client_key"])
def test_a_secret_key_others_may_read_is_refused_naming_the_file_and_the_fix(
    tcp_address: str, keys: dict[str, Path], setting: str, mode: int
) -> None:
    secret = keys["hub_secret"] if setting == "server_key" else keys["alice_secret"]
    secret.chmod(mode)
    settings = context(
        tcp_address,
        server_key=keys["hub_secret"] if setting == "server_key" else keys["hub"],
        client_key=keys["alice_secret"],
        authorized=keys["authorized"],
    )
    with pytest.raises(ConfigurationError) as refused:
        Bus(settings).subscribe("votes")
    message = str(refused.value)
    assert f"bus.curve.{setting} {secret}" in message
    assert f"chmod 600 {secret}" in message
    assert f"{mode:04o}" in message
    with pytest.raises(ConfigurationError, match="chmod 600"):
        Bus(settings).publish().start()
    secret.chmod(0o600)  # fixed as told: accepted
    Bus(settings).subscribe("votes").close()


def test_a_public_certificate_others_may_read_is_fine(
    tcp_address: str, keys: dict[str, Path]
) -> None:
    assert stat.S_IMODE(keys["hub"].stat().st_mode) == 0o644
    Bus(context(tcp_address, server_key=keys["hub"], client_key=keys["alice_secret"])).subscribe(
        "votes"
    ).close()


def test_the_hub_command_refuses_a_server_secret_others_may_read(
    tcp_address: str, keys: dict[str, Path]
) -> None:
    keys["hub_secret"].chmod(0o644)
    run = subprocess.run(
        [sys.executable, "-m", "shellbot.cli", "hub", "--address", tcp_address],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "SHELLBOT_BUS_CURVE_SERVER_KEY": str(keys["hub_secret"]),
            "SHELLBOT_BUS_CURVE_AUTHORIZED": str(keys["authorized"]),
        },
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert f"chmod 600 {keys['hub_secret']}" in run.stderr


def test_keygen_writes_the_secret_0600_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        public, secret = keygen("open", tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644


# -- a key removed loses its connections --------------------------------------------------


class _Stream:
    """Puts numbered messages on ``channel`` every ``interval`` until stopped."""

    def __init__(self, bus: Bus, channel: str, interval: float = 0.002) -> None:
        self.sent = 0
        self.refused: list[str] = []
        self._publisher = bus.publish()
        self._channel = channel
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._publisher.put(self._channel, self.sent)
            except AuthenticationError as error:  # refused: it may say so, once its queue is full
                self.refused.append(str(error))
                return
            self.sent += 1
            if self._interval or not self.sent % 100:
                time.sleep(self._interval)  # flat out: a pause now and then for the GIL

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)


class _Reader:
    """Takes what ``subscriber`` receives, with the time each one came."""

    def __init__(self, subscriber: Any) -> None:
        self.subscriber = subscriber
        self.times: list[float] = []
        self.messages: list[Any] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.subscriber.get(block=True, timeout=0.05)
            except AuthenticationError:
                self.refused += 1
                continue
            if message is not None:
                self.times.append(time.monotonic())
                self.messages.append(message)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def last_before(self, moment: float) -> float:
        return max((t for t in self.times if t <= moment), default=0.0)

    def longest_gap(self, start: float, end: float) -> float:
        moments = [t for t in self.times if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(moments)), default=end - start)


@pytest.mark.parametrize("interval", [0.002, 0.0], ids=["steady", "flat out"])
def test_a_key_removed_from_the_folder_loses_its_connections_within_5_s(
    local_hub: Any,
    tcp_address: str,
    keys: dict[str, Path],
    interval: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shellbot.bus")
    local_hub()
    alice, bob = client(tcp_address, keys, "alice"), client(tcp_address, keys, "bob")
    alice_hears = alice.subscribe("from bob")
    bob_hears = bob.subscribe("from bob")
    bob_hears_alice = bob.subscribe("from alice")
    for subscriber in (alice_hears, bob_hears, bob_hears_alice):
        assert subscriber.wait_ready(5.0)
    readers = {
        "alice hears bob": _Reader(alice_hears),
        "bob hears bob": _Reader(bob_hears),
        "bob hears alice": _Reader(bob_hears_alice),
    }
    from_bob = _Stream(bob, "from bob", interval)
    from_alice = _Stream(alice, "from alice")
    try:
        deadline = time.monotonic() + 10.0
        while not all(r.messages for r in readers.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(r.messages for r in readers.values()), "traffic never flowed"
        time.sleep(0.5)
        removed_at = time.monotonic()
        (keys["authorized"] / "alice.key").unlink()
        # The bound: 5 s, then a second of silence; 1.5 s of it ends the wait early.
        alice_heard = (readers["alice hears bob"], readers["bob hears alice"])
        while time.monotonic() < removed_at + 6.0:
            time.sleep(0.1)
            last = max(reader.last_before(time.monotonic()) for reader in alice_heard)
            if time.monotonic() - max(last, removed_at) >= 1.5:
                break
        ended = time.monotonic()
    finally:
        from_alice.stop()
        from_bob.stop()
    # bob's stream was going all along: whatever it missed shows in bob's count, exactly.
    deadline = time.monotonic() + 10.0
    bob_reader = readers["bob hears bob"]
    while time.monotonic() < deadline:
        counted = len(bob_reader.messages) + bob_hears.stats["missed"]
        if counted >= from_bob.sent:
            break
        time.sleep(0.05)
    for reader in readers.values():
        reader.stop()
    cut_off = {
        name: readers[name].last_before(ended) - removed_at
        for name in ("alice hears bob", "bob hears alice")
    }
    pause = bob_reader.longest_gap(removed_at, ended)
    missed = bob_hears.stats["missed"]
    print(
        f"\ncut off after removal: {cut_off['alice hears bob']:.2f} s (receiving), "
        f"{cut_off['bob hears alice']:.2f} s (publishing); bob's longest pause "
        f"{pause * 1000:.0f} ms; bob sent {from_bob.sent}, received "
        f"{len(bob_reader.messages)}, missed {missed}"
    )
    assert cut_off["alice hears bob"] < 5.0
    assert cut_off["bob hears alice"] < 5.0
    # ... and the second before the end brought alice nothing, either way.
    assert readers["alice hears bob"].last_before(ended) < ended - 1.0
    assert readers["bob hears alice"].last_before(ended) < ended - 1.0
    assert len(bob_reader.messages) + missed == from_bob.sent
    assert bob_reader.messages == sorted(bob_reader.messages)
    assert pause < 2.0
    assert bob_reader.last_before(ended) > ended - 0.5  # bob still hears himself at the end
    # Of the subscribers, alice's alone was cut: bob's kept its connection (and its routes).
    cuts = [r.getMessage() for r in caplog.records if "keys removed" in r.getMessage()]
    assert len(cuts) == 1 and "1 keys removed" in cuts[0], cuts
    assert "cut 1 connections of their subscribers" in cuts[0], cuts
    for subscriber in (alice_hears, bob_hears, bob_hears_alice):
        subscriber.close()


def test_a_key_file_rewritten_in_place_is_not_taken_for_a_removal(
    local_hub: Any, tcp_address: str, keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shellbot.bus")
    local_hub()
    alice = client(tcp_address, keys, "alice")
    hears = alice.subscribe("votes")
    assert hears.wait_ready(5.0)
    key_file = keys["authorized"] / "alice.key"
    text = key_file.read_bytes()
    for _ in range(5):  # emptied, then written: as an editor saving in place does
        key_file.write_bytes(b"")
        time.sleep(0.05)
        key_file.write_bytes(text)
        time.sleep(0.3)
    time.sleep(1.0)
    assert not [r for r in caplog.records if "keys removed" in r.getMessage()]
    publisher = alice.publish()
    publisher.put("votes", "still here")
    assert hears.get(block=True, timeout=5.0) == "still here"
    hears.close()
