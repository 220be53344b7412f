"""``shellbot-bus hub``: a standalone hub, logging connections and counters."""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from .._settings import DEFAULT_ADDRESS, BusSettings, redacted
from .._transports import HUB_COUNTERS, HubKind, transport_for
from ._app import app
from ._common import (
    EXIT_USAGE,
    Address,
    CurveAuthorized,
    CurveClientKey,
    CurveServerKey,
    checked,
    curve_options,
    epilog,
    fail,
    guarded,
    stamp,
    stop_on_signals,
    with_curve,
)
from ._connections import Connections
from ._probe import why_taken


@app.command(
    epilog=epilog("shellbot-bus hub", "shellbot-bus hub --address tcp://0.0.0.0:5555")
    + "\n\nOn a nats:// address the NATS server is the hub: the command says so and exits "
    "with 2, as for any address where it has nothing to run."
)
@guarded
def hub(
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.1, metavar="SECONDS", help="Seconds between two looks at counters."
        ),
    ] = 1.0,
    address: Address = DEFAULT_ADDRESS,
    curve_server_key: CurveServerKey = None,
    curve_client_key: CurveClientKey = None,
    curve_authorized: CurveAuthorized = None,
) -> None:
    """Run a standalone hub: subscribers connect at ADDRESS, publishers at its inbound side.

    Logs connections (on tcp://) and counters as they change; stops cleanly on
    Ctrl-C or SIGTERM, forwarding what is still arriving first.
    """
    curve = curve_options(curve_server_key, curve_client_key, curve_authorized)
    settings = with_curve(BusSettings(address=checked(address)), curve)
    transport = transport_for(settings)
    if transport.hub_kind is HubKind.BROKER:
        fail(
            f"{redacted(address)} needs no hub: {transport.broker_name} is the hub, already "
            "running; publishers and subscribers use it as it is",
            EXIT_USAGE,
        )
    if transport.process_local:
        fail(f"{address} lives inside one process: a hub for it would serve no one", EXIT_USAGE)
    refused = transport.hub_refused()
    if refused is not None:
        fail(f"cannot run a hub: {refused}", EXIT_USAGE)
    stop = threading.Event()
    with stop_on_signals(stop):
        the_hub = transport.open_hub()
        if the_hub is None:
            fail(why_taken(settings, transport))
        console = Console(highlight=False, soft_wrap=True)

        def log(*parts: str | tuple[str, str]) -> None:
            console.print(Text.assemble((stamp() + " ", "dim"), *parts))

        inbound = transport.publisher_address()
        log(("hub up", "bold green"), f": subscribers at {address}, publishers at {inbound}")
        watcher = Connections(settings.address, inbound)
        last: dict[str, int] = {}
        try:
            while not stop.wait(interval):
                for change in watcher.changes():
                    log(*change)
                stats = the_hub.stats()
                if stats != last:
                    log(_counters(stats, last))
                    last = stats
        finally:
            log(f"stopping: forwarding what still arrives, up to {settings.drain_timeout:g} s")
            the_hub.close(settings.drain_timeout)
            log(("stopped", "bold"), ": ", _counters(the_hub.stats(), {}))


def _counters(stats: dict[str, int], last: dict[str, int]) -> str:
    parts = []
    for name in HUB_COUNTERS:
        value = stats.get(name, 0)
        delta = value - last.get(name, 0)
        parts.append(f"{name} {value}" + (f" ({delta:+d})" if last and delta else ""))
    return ", ".join(parts)
