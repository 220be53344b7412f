"""``shellbot-bus bridge``: the bus and the original shellbot's wire, relayed both ways."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from .._settings import DEFAULT_ADDRESS, redacted
from ._app import app
from ._common import (
    EXIT_USAGE,
    Address,
    CurveAuthorized,
    CurveClientKey,
    CurveServerKey,
    bus_settings,
    checked,
    curve_options,
    epilog,
    err,
    fail,
    guarded,
    stop_on_signals,
)


@app.command(
    epilog=epilog(
        "shellbot-bus bridge --legacy tcp://127.0.0.1:5555 --address tcp://127.0.0.1:6000",
        "shellbot-bus bridge --legacy tcp://10.0.0.5:5555 --channel votes --channel ballots",
    )
)
@guarded
def bridge(
    legacy: Annotated[
        str,
        typer.Option(
            "--legacy",
            metavar="ADDRESS",
            help="Where the original shellbot's processes meet: tcp://HOST:PORT, the "
            "address their one publisher binds.",
        ),
    ],
    channels: Annotated[
        list[str] | None,
        typer.Option(
            "--channel",
            "-c",
            metavar="CHANNEL",
            help="A channel to relay (exact name; repeat it); none means every channel.",
            show_default=False,
        ),
    ] = None,
    address: Address = DEFAULT_ADDRESS,
    curve_server_key: CurveServerKey = None,
    curve_client_key: CurveClientKey = None,
    curve_authorized: CurveAuthorized = None,
) -> None:
    """Relay between the bus and processes of the original shellbot, both ways.

    A fleet can be ported one process at a time: while an original publisher holds
    --legacy, what it sends goes into the bus; while no one does, the bridge holds
    it and the original's subscribers hear the bus, in the original's frame. The
    bus and --legacy must differ (both default to port 5555). Ctrl-C or SIGTERM
    stops it, with a line of counts.
    """
    from .._bridge import LegacyBridge
    from ..bus import Bus
    from ..context import Context

    if not legacy.startswith("tcp://"):
        fail("--legacy takes the original's tcp://HOST:PORT address", EXIT_USAGE)
    if legacy == address:
        fail(
            f"--legacy and --address are both {legacy}: give the bus another address "
            "(the original's publisher binds its own)",
            EXIT_USAGE,
        )
    if address.startswith("tcp://") and legacy == _inbound_of(address):
        fail(
            f"--legacy {legacy} is the bus's inbound side (its port + 1): give the bus "
            "another address",
            EXIT_USAGE,
        )
    if any(not channel for channel in channels or []):
        fail("a channel is a non-empty string; give no --channel to relay them all", EXIT_USAGE)
    curve = curve_options(curve_server_key, curve_client_key, curve_authorized)
    context = Context({"bus": bus_settings(checked(address), curve)})
    bus = Bus(context)
    bus.check()
    relay = LegacyBridge(bus, legacy, list(channels or []))
    stop = threading.Event()
    what = "every channel" if not channels else ", ".join(channels)
    err.print(f"Bridging {redacted(address)} and the original's {legacy}: {what}. Ctrl-C to stop.")
    with stop_on_signals(stop):
        try:
            relay.run(stop, err.print)
        finally:
            err.print(f"Bridge stopped: {relay.summary()}")


def _inbound_of(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + 1}" if port.isdigit() else ""
