"""``shellbot-bus bridge``: a fleet ported one process at a time. The original's side is
played here from its documented wire: one PUB socket bound at the address, each message
one frame ``channel + ' ' + json.dumps(message)``, SUB sockets filtering by prefix."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from conftest import Subscribers, free_port_pair

from shellbot import Context
from shellbot.bus import Bus


class BridgeProcess:
    """``shellbot-bus bridge`` in a process of its own, its stderr read line by line."""

    def __init__(self, legacy: str, address: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shellbot.cli",
                "bridge",
                "--legacy",
                legacy,
                "--address",
                address,
                *options,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if text in line:
                return line
        left = []
        while not self.lines.empty():
            left.append(self.lines.get())
        raise AssertionError(f"the bridge did not say {text!r} within {timeout} s: {left}")

    def stop(self) -> str:
        """Stops it as Ctrl-C does; its summary line."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(10.0) == 0
        return self.wait_for("Bridge stopped")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5.0)


@pytest.fixture
def legacy() -> str:
    return f"tcp://127.0.0.1:{free_port_pair()}"


@pytest.fixture
def bridged(legacy: str, tcp_address: str) -> Iterator[tuple[Bus, list[BridgeProcess]]]:
    started: list[BridgeProcess] = []
    yield Bus(Context({"bus": {"address": tcp_address}})), started
    for bridge in started:
        bridge.kill()


def original_frame(channel: str, message: object) -> bytes:
    return (channel + " " + json.dumps(message)).encode()


def counts(summary: str) -> dict[str, int]:
    names = {
        "into the bus": "into_bus",
        "to the original": "to_original",
        "looped": "looped",
        "held": "held_back",
        "unreadable": "unreadable",
        "unsendable": "unsendable",
    }
    found = {}
    for number, words in re.findall(r"(\d+) ([a-z' ]+)", summary):
        for start, name in names.items():
            if words.startswith(start):
                found[name] = int(number)
    return found


def test_the_original_publisher_reaches_bus_subscribers_on_exact_channels(
    legacy: str,
    tcp_address: str,
    bridged: tuple[Bus, list[BridgeProcess]],
    raw: zmq.Context,
    subscribers: Subscribers,
) -> None:
    bus, started = bridged
    original = raw.socket(zmq.PUB)
    original.bind(legacy)  # the original's publisher holds its address
    bridge = BridgeProcess(legacy, tcp_address, "--channel", "chan", "--channel", "hello")
    started.append(bridge)
    bridge.wait_for("An original publisher holds")
    keeper = bus.publish()
    keeper.start()  # uses the bridge's hub
    try:
        everything = subscribers(bus, "")
        deadline = time.monotonic() + 10.0
        while everything.get() is None:  # the original's SUB joins late: say hello until heard
            assert time.monotonic() < deadline, "the bridge never relayed a hello"
            original.send(original_frame("hello", "?"))
            time.sleep(0.05)
        while everything.get(block=True, timeout=0.3) is not None:
            pass
        sent = [{"n": n, "text": "déjà vu"} for n in range(100)]
        for message in sent:
            original.send(original_frame("chan", message))
            original.send(original_frame("channel", message))  # a prefix of it: not asked for
        original.send(b"chan")  # no JSON: unreadable
        original.send(b"chan {not json")
        original.send(original_frame("chan", "end"))
        received = [everything.receive(block=True, timeout=5.0) for _ in range(101)]
        assert [(m.channel, m.message) for m in received] == [
            ("chan", message) for message in [*sent, "end"]
        ]
        assert everything.get(block=True, timeout=0.3) is None
    finally:
        keeper.stop()
    found = counts(bridge.stop())
    assert found["into_bus"] >= 101 and found["unreadable"] == 2


def test_bus_messages_reach_the_original_subscribers_byte_for_byte_and_nothing_loops(
    legacy: str,
    tcp_address: str,
    bridged: tuple[Bus, list[BridgeProcess]],
    raw: zmq.Context,
    subscribers: Subscribers,
) -> None:
    bus, started = bridged
    publisher = bus.publish()
    publisher.start()  # before the bind below: a forked process would keep its port open
    original_publisher = raw.socket(zmq.PUB)
    original_publisher.bind(legacy)
    bridge = BridgeProcess(legacy, tcp_address)
    started.append(bridge)
    try:
        bridge.wait_for("An original publisher holds")
        heard = subscribers(bus, "from-original")
        deadline = time.monotonic() + 10.0
        while heard.get() is None:
            assert time.monotonic() < deadline, "the bridge never relayed the original"
            original_publisher.send(original_frame("from-original", 1))
            time.sleep(0.05)
        # The original publisher is ported: its address is free, the bridge takes it.
        original_publisher.close(linger=0)
        bridge.wait_for("Holding")
        original_subscriber = raw.socket(zmq.SUB)
        original_subscriber.setsockopt(zmq.SUBSCRIBE, b"news")
        original_subscriber.connect(legacy)
        deadline = time.monotonic() + 10.0
        while not original_subscriber.poll(50):
            assert time.monotonic() < deadline, "the original subscriber never heard the bus"
            publisher.put("news", "hello")
        while original_subscriber.poll(300):
            original_subscriber.recv()
        sent = [{"k": "déjà", "n": [n, 2.5], "ok": True} for n in range(50)]
        for message in sent:
            publisher.put("news", message)
        publisher.put("news and more", "a space: the original's frame cannot carry it")
        publisher.put("news", "end")
        frames = []
        while original_subscriber.poll(5000):
            frames.append(original_subscriber.recv())
            if frames[-1] == original_frame("news", "end"):
                break
        assert frames == [original_frame("news", message) for message in [*sent, "end"]]
        assert not original_subscriber.poll(300)  # the relayed-in messages never came back
    finally:
        publisher.stop()
    found = counts(bridge.stop())
    assert found["to_original"] >= 51 and found["unsendable"] == 1
    # What it put on the bus came back on its subscription, skipped; so did what it sent
    # on the original's address (its own SUB hears its PUB once it holds the address).
    assert found["looped"] >= found["into_bus"] + 51


def test_the_bridge_refuses_an_address_that_collides(tcp_address: str) -> None:
    inbound = tcp_address.rsplit(":", 1)[0] + ":" + str(int(tcp_address.rsplit(":", 1)[1]) + 1)
    for legacy, expected in [
        (tcp_address, "both"),
        (inbound, "inbound side"),
        ("ipc:///tmp/x", "tcp://HOST:PORT"),
    ]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "shellbot.cli",
                "bridge",
                "--legacy",
                legacy,
                "--address",
                tcp_address,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
