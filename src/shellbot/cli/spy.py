"""``shellbot-bus spy``: every message on some channels, as it passes."""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text

from .._settings import DEFAULT_ADDRESS, BusSettings, redacted
from .._transports import transport_for
from .._transports.base import HubKind
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
    stamp,
    stop_on_signals,
)

if TYPE_CHECKING:
    from ..bus import Subscriber

READY_TIMEOUT = 10.0  # how long spy waits for its subscription to be confirmed


@app.command(
    epilog=epilog(
        "shellbot-bus spy",
        "shellbot-bus spy news weather --count 10",
        "shellbot-bus spy 'vote.>' --json | jq .message",
    )
)
@guarded
def spy(
    channels: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CHANNEL...",
            help="Channels to watch (patterns too: 'vote.*', 'vote.>'); none means every channel.",
            show_default=False,
        ),
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            metavar="",
            help="Print JSON lines: channel, time, message, sender (an integer, as in "
            "Message.sender) and sequence.",
        ),
    ] = False,
    count: Annotated[
        int,
        typer.Option(
            "--count", "-c", min=0, metavar="N", help="Stop after this many messages (0: never)."
        ),
    ] = 0,
    address: Address = DEFAULT_ADDRESS,
    curve_server_key: CurveServerKey = None,
    curve_client_key: CurveClientKey = None,
    curve_authorized: CurveAuthorized = None,
) -> None:
    """Print every message on some channels, with its channel and time, as it passes.

    Colored on a terminal; --json prints one JSON object per line for pipes. The
    spy keeps the bus up while it runs, so a publisher elsewhere finds a hub (on
    nats://, the NATS server does). Ctrl-C or SIGTERM stops it.
    """
    from ..bus import Bus
    from ..context import Context

    wanted = list(channels) if channels else [""]
    if any(not channel for channel in channels or []):
        fail("a channel is a non-empty string; give no channel to watch them all", EXIT_USAGE)
    curve = curve_options(curve_server_key, curve_client_key, curve_authorized)
    context = Context({"bus": bus_settings(checked(address), curve)})
    bus = Bus(context)
    bus.check()
    shown = redacted(address)
    # A broker is up already: nothing for a publisher of ours to keep up.
    keeps = transport_for(BusSettings.from_context(context)).hub_kind is HubKind.EMBEDDED
    stop = threading.Event()
    with stop_on_signals(stop):
        keeper = bus.publish() if keeps else None
        if keeper is not None:
            keeper.start()
        try:
            with bus.subscribe(wanted, pattern=True) as subscriber:
                if not subscriber.wait_ready(READY_TIMEOUT):
                    fail(f"the bus at {shown} did not confirm the subscription in time")
                what = "every channel" if wanted == [""] else ", ".join(wanted)
                err.print(f"Spying on {shown}: {what}. Ctrl-C to stop.")
                _spy_loop(subscriber, json_lines, count, stop)
        finally:
            if keeper is not None:
                keeper.stop(timeout=keeper.settings.drain_timeout + 1.0)


def _spy_loop(subscriber: Subscriber, json_lines: bool, count: int, stop: threading.Event) -> None:
    out = Console(highlight=False, soft_wrap=True)
    color = out.is_terminal and not json_lines
    highlight = JSONHighlighter()
    styles = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")
    seen = 0
    try:
        while not stop.is_set() and (count == 0 or seen < count):
            message = subscriber.receive(block=True, timeout=0.25)
            if message is None:
                continue
            seen += 1
            now = time.time()
            body = orjson.dumps(message.message).decode()
            if json_lines:
                line = orjson.dumps(
                    {
                        "channel": message.channel,
                        "time": datetime.fromtimestamp(now).astimezone().isoformat(),
                        "message": message.message,
                        "sender": message.sender,
                        "sequence": message.sequence,
                    }
                ).decode()
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            elif color:
                style = styles[sum(message.channel.encode()) % len(styles)]
                out.print(
                    Text.assemble(
                        (stamp(now), "dim"),
                        " ",
                        (message.channel, f"bold {style}"),
                        " ",
                        highlight(Text(body)),
                    )
                )
            else:
                sys.stdout.write(f"{stamp(now)} {message.channel} {body}\n")
                sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (spy | head): that is an end, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
