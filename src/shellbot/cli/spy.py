"""``shellbot-bus spy``: every message on some channels, as it passes."""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text

from .._codec import HEADER, HEADER_SIZE, REPLY
from .._settings import DEFAULT_ADDRESS, BusSettings, redacted
from .._transports import HubKind, transport_for, transport_of
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
            "Message.sender), sequence, and kind for a request or an answer.",
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
    keeps = transport_of(context).hub_kind is HubKind.EMBEDDED
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
                show = _Lines(json_lines)
                answers = threading.Thread(
                    target=_spy_answers,
                    args=(BusSettings.from_context(context), show, stop),
                    daemon=True,
                )
                answers.start()
                try:
                    _spy_loop(subscriber, show, count, stop)
                finally:
                    stop.set()
                    answers.join(1.0)
        finally:
            if keeper is not None:
                keeper.stop(timeout=keeper.settings.drain_timeout + 1.0)


def _spy_loop(subscriber: Subscriber, show: _Lines, count: int, stop: threading.Event) -> None:
    seen = 0
    try:
        while not stop.is_set() and (count == 0 or seen < count):
            message = subscriber.receive(block=True, timeout=0.25)
            if message is None:
                continue
            seen += 1
            kind = "request" if message.is_request else None
            show(message.channel, message.message, message.sender, message.sequence, kind)
    except BrokenPipeError:  # the reader went away (spy | head): that is an end, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _Lines:
    """Prints what the spy sees, one line each, from the spy's threads."""

    STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")

    def __init__(self, json_lines: bool) -> None:
        self.out = Console(highlight=False, soft_wrap=True)
        self.json_lines = json_lines
        self.color = self.out.is_terminal and not json_lines
        self.highlight = JSONHighlighter()
        self.lock = threading.Lock()

    def __call__(
        self, channel: str, value: Any, sender: int, sequence: int, kind: str | None
    ) -> None:
        """One line: a message, a request (``kind``), or an answer (its reply address)."""
        now = time.time()
        body = orjson.dumps(value).decode()
        with self.lock:
            if self.json_lines:
                fields: dict[str, Any] = {
                    "channel": channel,
                    "time": datetime.fromtimestamp(now).astimezone().isoformat(),
                    "message": value,
                    "sender": sender,
                    "sequence": sequence,
                }
                if kind is not None:
                    fields["kind"] = kind
                sys.stdout.write(orjson.dumps(fields).decode() + "\n")
                sys.stdout.flush()
            elif self.color:
                style = self.STYLES[sum(channel.encode()) % len(self.STYLES)]
                self.out.print(
                    Text.assemble(
                        (stamp(now), "dim"),
                        " ",
                        (channel, f"bold {style}"),
                        " ",
                        (f"({kind}) " if kind else "", "italic"),
                        self.highlight(Text(body)),
                    )
                )
            else:
                marked = f"({kind}) " if kind else ""
                sys.stdout.write(f"{stamp(now)} {channel} {marked}{body}\n")
                sys.stdout.flush()


def _spy_answers(settings: BusSettings, show: _Lines, stop: threading.Event) -> None:
    """Shows every answer to a request as it passes (on the line of its reply address:
    the request's channel does not travel with it), until ``stop``."""
    receiver = transport_for(settings).open_receiver()
    receiver.subscribe(REPLY)
    try:
        while not stop.is_set():
            frames = receiver.receive(0.25)
            if frames is None or len(frames) != 2:
                continue
            topic, body = frames
            address = topic[len(REPLY) :].decode("ascii", "replace")
            if not body:
                show(f"to {address}", "no one subscribes", 0, 0, "no responders")
                continue
            if len(body) < HEADER_SIZE:
                continue
            try:
                value = orjson.loads(body[HEADER_SIZE:])
            except orjson.JSONDecodeError:
                continue
            sender, sequence = HEADER.unpack_from(body)
            show(f"to {address}", value, sender, sequence, "answer")
    except Exception:  # closed or refused: the spy's subscriber says why
        return
    finally:
        receiver.close()
