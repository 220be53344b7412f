"""``shellbot-bus publish``: one JSON message, or one per line of standard input."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from .._settings import DEFAULT_ADDRESS, redacted
from ..errors import MessageTooLarge
from ._app import app
from ._common import (
    EXIT_INPUT,
    EXIT_USAGE,
    Address,
    CommandError,
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
)

if TYPE_CHECKING:
    from ..bus import Publisher


@app.command(
    epilog=epilog(
        """shellbot-bus publish greetings '{"hello": "world"}'""",
        """printf '1\\n{"n": 2}\\n' | shellbot-bus publish counts""",
    )
)
@guarded
def publish(
    channel: Annotated[str, typer.Argument(metavar="CHANNEL", help="The channel to publish on.")],
    message: Annotated[
        str | None,
        typer.Argument(
            metavar="MESSAGE",
            help="One JSON value (a string needs quotes: '\"hi\"'); without it, JSON lines "
            "are read from standard input.",
            show_default=False,
        ),
    ] = None,
    address: Address = DEFAULT_ADDRESS,
    curve_server_key: CurveServerKey = None,
    curve_client_key: CurveClientKey = None,
    curve_authorized: CurveAuthorized = None,
) -> None:
    """Publish one JSON message on a channel, or one message per line of standard input.

    A line that is not JSON stops the command with an error naming the line
    (exit 3); the lines before it are sent. Blank lines are skipped.
    """
    from ..bus import Bus
    from ..context import Context

    if not channel:
        fail("a channel is a non-empty string", EXIT_USAGE)
    first = None if message is None else _parse(message, "MESSAGE")
    curve = curve_options(curve_server_key, curve_client_key, curve_authorized)
    context = Context({"bus": bus_settings(checked(address), curve)})
    bus = Bus(context)
    bus.check()
    publisher = bus.publish()
    publisher.start()
    sent = 0
    problem: CommandError | None = None
    try:
        if first is not None:
            _put(publisher, channel, first, "MESSAGE")
            sent = 1
        else:
            if sys.stdin.isatty():
                err.print("Reading JSON lines; Ctrl-D to end.")
            for number, line in enumerate(sys.stdin, start=1):
                if not line.strip():
                    continue
                try:
                    _put(publisher, channel, _parse(line, f"line {number}"), f"line {number}")
                except CommandError as error:
                    problem = error
                    break
                sent += 1
    finally:
        # What was put leaves before the publisher process ends: stop() waits for that.
        left = publisher.stop(timeout=publisher.settings.drain_timeout + 3.0)
    if not left:
        fail(f"the publisher did not stop in time: some of {sent} messages may not have left")
    plural = "message" if sent == 1 else "messages"
    # Only a hub of our own knows where the messages went; another one keeps it to itself.
    unrouted = publisher.stats["unrouted"] if publisher.holds_hub and sent else 0
    if unrouted >= sent > 0:
        heard = ": no subscriber was listening"
    elif unrouted:
        heard = f": {unrouted} of them reached no subscriber"
    else:
        heard = ""
    err.print(f"Published {sent} {plural} on {channel!r} at {redacted(address)}{heard}")
    if problem is not None:
        raise problem


def _put(publisher: Publisher, channel: str, value: Any, where: str) -> None:
    """Puts one message; one too large is bad input, with a hint a command line can follow."""
    try:
        publisher.put(channel, value)
    except MessageTooLarge:
        fail(
            f"{where} is too large for the bus ({len(orjson.dumps(value))} bytes as JSON, over "
            f"the limit of {publisher.settings.max_message_size} that hubs and subscribers keep "
            "too): split it into smaller messages, such as one JSON value per line",
            EXIT_INPUT,
        )


def _parse(text: str, where: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        fail(
            f"{where} is not JSON ({error.msg} at column {error.colno}): {text.strip()[:60]!r}",
            EXIT_INPUT,
        )
    if value is None:
        fail(f"{where} is null, which the bus does not carry: send {{}} or false", EXIT_INPUT)
    return value
