"""Errors: one tree under ShellbotError, foreign errors translated, messages that say what to do."""

from __future__ import annotations

import builtins
import inspect
import time
from pathlib import Path

import pytest
import zmq

import shellbot.errors as errors
from shellbot import Context
from shellbot._settings import BusSettings
from shellbot._transports import transport_for
from shellbot._transports.zmq.sockets import inbound_address
from shellbot.bus import Bus
from shellbot.errors import (
    AddressInUse,
    ClosedError,
    ConfigurationError,
    MessageError,
    MessageTooLarge,
    ShellbotError,
    TimeoutError,
    TransportError,
)


def test_the_tree_is_the_one_drawn_in_the_docstring() -> None:
    assert issubclass(ConfigurationError, (ShellbotError, ValueError))
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(MessageError, ShellbotError) and issubclass(MessageError, ValueError)
    assert issubclass(MessageTooLarge, MessageError)
    assert issubclass(TransportError, ShellbotError)
    assert issubclass(AddressInUse, TransportError)
    assert issubclass(ClosedError, ShellbotError)
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and value.__module__ == errors.__name__
    ]
    assert sorted(cls.__name__ for cls in classes) == sorted(errors.__all__)
    for cls in classes:
        assert issubclass(cls, ShellbotError)
        assert cls.__name__ in (errors.__doc__ or "")
        assert cls.__doc__, f"{cls.__name__} says nothing of itself"


def test_timeout_error_is_both_ours_and_the_builtin() -> None:
    assert TimeoutError is not builtins.TimeoutError
    assert issubclass(TimeoutError, ShellbotError)
    assert issubclass(TimeoutError, builtins.TimeoutError)
    with pytest.raises(builtins.TimeoutError):
        raise TimeoutError("caught as the builtin")
    with pytest.raises(ShellbotError):
        raise TimeoutError("caught as ours")


def test_put_without_a_hub_times_out_with_our_timeout_error(tcp_address: str) -> None:
    # No hub: what is put waits in this process, up to the high-water mark; then
    # put() waits bus.send_timeout for room, and gives up.
    context = Context(
        {
            "bus": {
                "address": tcp_address,
                "send_high_water_mark": 1,
                "send_timeout": 0.05,
                "linger": 0,
            }
        }
    )
    publisher = Bus(context).publish()
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        for index in range(1_000):
            publisher.put("nowhere", index)
    assert time.monotonic() - started < 5.0
    assert isinstance(raised.value, builtins.TimeoutError)
    assert "start a publisher or `shellbot-bus hub`" in str(raised.value)
    assert isinstance(raised.value.__cause__, zmq.Again)  # errors.py: the cause is kept
    port = int(tcp_address.rsplit(":", 1)[1])
    # It failed on the inbound side; both sides are named, so neither port surprises.
    assert f"127.0.0.1:{port + 1}, the inbound side of {tcp_address}" in str(raised.value)


def test_a_zeromq_error_on_sending_is_translated_with_its_cause(tcp_address: str) -> None:
    settings = BusSettings.from_context(
        Context(
            {
                "bus": {
                    "address": tcp_address,
                    "send_high_water_mark": 1,
                    "send_timeout": 0.05,
                    "linger": 0,
                }
            }
        )
    )
    sender = transport_for(settings).open_sender()
    try:
        with pytest.raises(TimeoutError, match=r"before bus\.send_timeout") as raised:
            for _ in range(1_000):
                sender.send([(b"nowhere\xff", b"body")])
        assert isinstance(raised.value.__cause__, zmq.Again)
    finally:
        sender.close(0.0)


@pytest.mark.embedded_hub
def test_start_names_both_sides_when_no_hub_answers(tcp_address: str) -> None:
    """A ZeroMQ program that is not a hub of this bus holds the address (an XPUB socket,
    as a hub's outward side is, but no inbound side behind it)."""
    other = zmq.Context()
    squatter = other.socket(zmq.XPUB)
    squatter.bind(tcp_address)
    try:
        context = Context({"bus": {"address": tcp_address, "start_timeout": 1.0}})
        with pytest.raises(TimeoutError) as raised:
            Bus(context).publish().start()
    finally:
        other.destroy(linger=0)
    port = int(tcp_address.rsplit(":", 1)[1])
    message = str(raised.value)
    assert f"No hub answered at {tcp_address}" in message
    assert f"the hub's inbound side tcp://127.0.0.1:{port + 1}" in message
    assert "could not hold the hub there" in message


@pytest.mark.embedded_hub
def test_a_bus_on_another_bus_inbound_port_is_told_so_at_once(tcp_address: str) -> None:
    """Two buses on ports P and P + 1: the second finds P + 1 is the first's inbound
    side, and says so at start(), naming the process, not at its timeout."""
    first = Bus(Context({"bus": {"address": tcp_address}})).publish()
    first.start()
    try:
        host, port = tcp_address.rsplit(":", 1)
        neighbour = f"{host}:{int(port) + 1}"
        started = time.monotonic()
        with pytest.raises(TransportError) as raised:
            Bus(Context({"bus": {"address": neighbour}})).publish().start()
        took = time.monotonic() - started
    finally:
        first.stop()
    message = str(raised.value)
    assert f"{neighbour} is the inbound side of another bus's hub" in message
    assert "bus.inbound" in message and "2 or more away" in message
    assert "(process " in message  # who holds it: here, this test's own processes
    assert took < 5.0  # at once, not after bus.start_timeout (10 s)


@pytest.mark.embedded_hub
def test_the_original_publisher_on_the_address_is_named(tcp_address: str) -> None:
    """The original shellbot's publisher binds a PUB socket at its address."""
    other = zmq.Context()
    original = other.socket(zmq.PUB)
    original.bind(tcp_address)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match="original shellbot's publisher") as raised:
            Bus(Context({"bus": {"address": tcp_address}})).publish().start()
        took = time.monotonic() - started
    finally:
        other.destroy(linger=0)
    assert "shellbot-bus bridge --legacy" in str(raised.value)
    assert took < 5.0


@pytest.mark.embedded_hub
def test_a_bind_error_is_translated_and_says_what_to_do(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/{'x' * 150}"  # longer than a socket path may be
    settings = BusSettings.from_context(Context({"bus": {"address": address}}))
    with pytest.raises(TransportError, match="use an address this machine can bind") as raised:
        transport_for(settings).open_hub()
    assert isinstance(raised.value.__cause__, zmq.ZMQError)
    started = time.monotonic()
    with pytest.raises(TransportError, match="use an address this machine can bind"):
        Bus(Context({"bus": {"address": address}})).publish().start()
    assert time.monotonic() - started < 5.0  # told at once, not after start()'s timeout


@pytest.mark.embedded_hub
def test_an_ipc_address_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/missing/bus"
    started = time.monotonic()
    with pytest.raises(TransportError, match="in a directory that exists") as raised:
        Bus(Context({"bus": {"address": address}})).publish().start()
    assert time.monotonic() - started < 5.0
    assert "missing/bus" in str(raised.value)


def test_closed_error_says_what_to_do() -> None:
    subscriber = Bus(Context({"bus": {"address": "memory://errors-closed"}})).subscribe("x")
    subscriber.close()
    with pytest.raises(ClosedError, match=r"make a new one with bus\.subscribe\(\)"):
        subscriber.get()


def test_a_zeromq_error_on_receiving_is_translated(tcp_address: str) -> None:
    settings = BusSettings.from_context(Context({"bus": {"address": tcp_address}}))
    receiver = transport_for(settings).open_receiver()
    receiver.close()
    with pytest.raises(ClosedError, match="subscribe again") as raised:
        receiver.receive(0.01)
    assert isinstance(raised.value.__cause__, zmq.ZMQError)


@pytest.mark.parametrize(
    ("settings", "hint"),
    [
        ({"address": "localhost:5555"}, "must look like tcp://127.0.0.1:5555"),
        ({"address": "udp://127.0.0.1:5555"}, "use one of tcp://"),
        ({"address": "tcp://127.0.0.1"}, "needs a host and a port"),
    ],
)
def test_configuration_errors_say_what_to_do(settings: dict[str, str], hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        Bus(Context({"bus": settings})).check()


def test_message_errors_say_what_to_do() -> None:
    bus = Bus(Context({"bus": {"address": "memory://errors-messages"}}))
    publisher = bus.publish()
    with pytest.raises(MessageError, match="send another value"):
        publisher.put("x", None)
    with pytest.raises(MessageError, match="non-empty string"):
        publisher.put("", 1)
    with pytest.raises(MessageError, match="replace it before put"):
        publisher.put("x", {"n": float("nan")})
    with pytest.raises(TypeError, match="cannot be encoded as JSON"):
        publisher.put("x", object())
    small = Bus(
        Context({"bus": {"address": bus.context.get("bus.address"), "max_message_size": 10}})
    )
    with pytest.raises(MessageTooLarge, match=r"split it, or raise bus\.max_message_size"):
        small.publish().put("x", "y" * 100)
    with pytest.raises(ValueError, match="tokens are separated by single dots"):
        bus.subscribe("votes..*", pattern=True)


@pytest.mark.embedded_hub
def test_a_hub_that_cannot_bind_its_inbound_side_lets_everything_go(tcp_address: str) -> None:
    """What the hub made before it failed is released: once the inbound side is free, a
    hub binds the same address at once (a socket kept open would hold it: None)."""
    from shellbot._transports.zmq.hub import open_hub

    settings = BusSettings.from_context(Context({"bus": {"address": tcp_address}}))
    other = zmq.Context()
    squatter = other.socket(zmq.PULL)
    squatter.bind(inbound_address(settings))
    try:
        with pytest.raises(AddressInUse, match="but not its inbound side") as raised:
            open_hub(zmq.Context.instance(), settings)
        assert isinstance(raised.value.__cause__, zmq.ZMQError)
    finally:
        other.destroy(linger=0)
    hub = open_hub(zmq.Context.instance(), settings)
    assert hub is not None
    hub.close(0.0)
