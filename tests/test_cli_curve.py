"""A bus secured with CURVE, from the command line: every command takes the keys, and a
command without them is told at once that the hub is secured."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shellbot import Context
from shellbot._keys import keygen
from shellbot.bus import Bus


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    paths: dict[str, Path] = {"authorized": authorized}
    for name in ("hub", "hubproc", "alice"):
        public, secret = keygen(name, folder)
        paths[name], paths[name + "_secret"] = public, secret
    (authorized / "alice.key").write_bytes(paths["alice"].read_bytes())
    return paths


@pytest.fixture
def secured_hub(tcp_address: str, keys: dict[str, Path]) -> Any:
    curve = {
        "server_key": str(keys["hub_secret"]),
        "client_key": str(keys["hubproc_secret"]),
        "authorized": str(keys["authorized"]),
    }
    publisher = Bus(Context({"bus": {"address": tcp_address, "curve": curve}})).publish()
    publisher.start()
    assert publisher.holds_hub
    yield publisher
    publisher.stop()


def shellbot_bus(*arguments: str, env: dict[str, str] | None = None, **options: Any) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "shellbot.cli", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **options,
    )


def test_spy_and_publish_take_the_keys_as_options_and_from_the_environment(
    tcp_address: str, keys: dict[str, Path], secured_hub: Any
) -> None:
    spy = shellbot_bus(
        "spy",
        "news",
        "--count",
        "1",
        "--address",
        tcp_address,
        "--curve-server-key",
        str(keys["hub"]),
        "--curve-client-key",
        str(keys["alice_secret"]),
    )
    try:
        environment = {
            "SHELLBOT_BUS_CURVE_SERVER_KEY": str(keys["hub"]),
            "SHELLBOT_BUS_CURVE_CLIENT_KEY": str(keys["alice_secret"]),
        }
        deadline = time.monotonic() + 30.0
        while spy.poll() is None and time.monotonic() < deadline:
            publish = shellbot_bus(
                "publish", "news", '"secret"', "--address", tcp_address, env=environment
            )
            _, error = publish.communicate(timeout=30)
            assert publish.returncode == 0, error
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(1.0)
        out, error = spy.communicate(timeout=10)
        assert spy.returncode == 0, error
        assert 'news "secret"' in out
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(5)


@pytest.mark.parametrize("command", [["publish", "news", "1"], ["spy"]])
def test_a_command_without_keys_is_told_the_hub_is_secured(
    command: list[str], tcp_address: str, secured_hub: Any
) -> None:
    started = time.monotonic()
    process = shellbot_bus(*command, "--address", tcp_address)
    _, error = process.communicate(timeout=30)
    took = time.monotonic() - started
    assert process.returncode == 1
    assert error.count("\n") == 1, error
    assert "is secured with CURVE" in error and "--curve-server-key" in error
    assert took < 8.0  # at once, not after bus.start_timeout (10 s)


def test_the_hosts_join_hint_names_the_keys_a_joiner_needs(
    tcp_address: str, keys: dict[str, Path]
) -> None:
    process = shellbot_bus(
        "vote",
        "--voters",
        "2",
        "--workers",
        "1",
        "--think",
        "0.1",
        "--wait",
        "0.5",
        "--timeout",
        "5",
        "--address",
        tcp_address,
        "--curve-server-key",
        str(keys["hub_secret"]),
        "--curve-client-key",
        str(keys["hubproc_secret"]),
        "--curve-authorized",
        str(keys["authorized"]),
    )
    out, error = process.communicate(timeout=60)
    assert process.returncode == 0, error
    hint = next(line for line in out.splitlines() if "--join" in line)
    assert f"--curve-server-key {keys['hub']} --curve-client-key YOURS.key_secret" in hint
