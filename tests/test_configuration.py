"""Bad settings get a clear error at the call that caused it."""

from __future__ import annotations

import logging

import pytest

from shellbot import Context
from shellbot.bus import Bus, Publisher, Subscriber
from shellbot.errors import ConfigurationError


@pytest.mark.parametrize(
    "address",
    [
        "http://127.0.0.1:5555",
        "127.0.0.1:5555",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:99999",
        "tcp://:5555",
        "ipc://",
        42,
    ],
)
def test_an_unusable_address_is_refused_by_check_and_by_use(address: object) -> None:
    context = Context({"bus": {"address": address}})
    bus = Bus(context)
    with pytest.raises(ConfigurationError, match=r"bus\.address"):
        bus.check()
    with pytest.raises(ValueError, match=r"bus\.address"):
        bus.publish()
    with pytest.raises(ValueError, match=r"bus\.address"):
        bus.subscribe("direct-1")


def test_what_is_not_a_context_is_refused() -> None:
    for make in (Bus, Publisher, lambda value: Subscriber(value, "x")):
        with pytest.raises(TypeError, match="Context"):
            make(42)


def test_an_address_may_stand_for_a_context(tcp_address: str) -> None:
    assert Bus(tcp_address).context.get("bus.address") == tcp_address
    assert Publisher(tcp_address).settings.address == tcp_address
    assert Publisher().settings.address == Bus.DEFAULT_ADDRESS


# None is no channel, a ValueError as for put(): see test_contract.py.
@pytest.mark.parametrize("channels", [42, b"bytes", [1], {"a": 1}])
def test_subscribe_refuses_what_is_not_a_channel(tcp_address: str, channels: object) -> None:
    with pytest.raises(TypeError, match="subscribe"):
        Bus(tcp_address).subscribe(channels)  # type: ignore[arg-type]


def test_a_setting_that_is_not_a_number_is_named(tcp_address: str) -> None:
    context = Context({"bus": {"address": tcp_address, "linger": "long"}})
    with pytest.raises(ConfigurationError, match=r"bus\.linger takes a number"):
        Bus(context).subscribe("direct-1")


def test_a_misspelt_setting_is_warned_of_with_the_nearest_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = Context({"bus": {"adress": "tcp://127.0.0.1:7777", "lingr": 1, "colour": "red"}})
    with caplog.at_level(logging.WARNING, logger="shellbot.bus"):
        Bus(context).publish()
        Bus(context).publish()  # once per process and key, not at every object
    warnings = [record.getMessage() for record in caplog.records]
    assert (
        warnings.count(
            "bus.adress is not a setting of the bus and is ignored; did you mean bus.address?"
        )
        == 1
    )
    assert "bus.lingr is not a setting of the bus and is ignored; did you mean bus.linger?" in (
        warnings
    )
    assert "bus.colour is not a setting of the bus and is ignored" in warnings
    assert len(warnings) == 3


def test_the_last_port_is_refused_for_want_of_an_inbound_side() -> None:
    context = Context({"bus": {"address": "tcp://127.0.0.1:65535"}})
    with pytest.raises(ConfigurationError, match="inbound side takes the port after"):
        Bus(context).check()


@pytest.mark.parametrize(
    "address", ["memory://x", "inproc://x", "ipc:///tmp/shellbot-x", "nats://127.0.0.1:1"]
)
def test_curve_settings_are_refused_where_curve_does_not_apply(address: str) -> None:
    context = Context({"bus": {"address": address, "curve": {"server_key": "hub.key"}}})
    with pytest.raises(ConfigurationError, match="tcp:// addresses only"):
        Bus(context).publish()
    with pytest.raises(ConfigurationError, match="tcp:// addresses only"):
        Bus(context).subscribe("votes")
