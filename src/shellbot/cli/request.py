"""``shellbot-bus request``: ask a channel, print the answer (or every answer)."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from .._settings import DEFAULT_ADDRESS, redacted
from ._app import app
from ._common import EXIT_USAGE, Address, bus_settings, checked, epilog, err, fail, guarded
from .publish import _parse


@app.command(
    epilog=epilog(
        """shellbot-bus request double 21""",
        """shellbot-bus request vote.ask '"lunch?"' --all --timeout 5 --count 3""",
    )
)
@guarded
def request(
    channel: Annotated[str, typer.Argument(metavar="CHANNEL", help="The channel to ask.")],
    message: Annotated[
        str,
        typer.Argument(metavar="MESSAGE", help="One JSON value (a string needs quotes: '\"hi\"')."),
    ],
    timeout: Annotated[
        float,
        typer.Option("--timeout", "-t", min=0.001, metavar="S", help="Seconds to wait."),
    ] = 2.0,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Print every answer that comes within the timeout (or until --count), as "
            "JSON lines of message and sender.",
        ),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option("--count", "-c", min=1, metavar="N", help="With --all: stop after N."),
    ] = None,
    address: Address = DEFAULT_ADDRESS,
) -> None:
    """Send a request on a channel and print the answer as a JSON line.

    A subscriber of the channel answers (`shellbot-bus reply`, or a program's
    message.reply()). Fails with one line and exit 1 when no one subscribes to the
    channel, or when no answer came within the timeout.
    """
    from ..bus import Bus
    from ..context import Context

    if not channel:
        fail("a channel is a non-empty string", EXIT_USAGE)
    if count is not None and not every:
        fail("--count goes with --all", EXIT_USAGE)
    value = _parse(message, "MESSAGE")
    bus = Bus(Context({"bus": bus_settings(checked(address))}))
    bus.check()
    keeper = bus.publish()  # holds the hub when none does, as publish would
    keeper.start()
    try:
        if not every:
            answer = bus.request(channel, value, timeout=timeout)
            sys.stdout.write(orjson.dumps(answer).decode() + "\n")
            return
        answers = bus.request_all(channel, value, timeout=timeout, count=count)
        for one in answers:
            line = {"message": one.message, "sender": one.sender}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        if not answers:
            fail(f"no answer on {channel!r} at {redacted(address)} within {timeout:g} s")
        plural = "answer" if len(answers) == 1 else "answers"
        err.print(f"{len(answers)} {plural} on {channel!r} at {redacted(address)}")
    finally:
        keeper.stop(timeout=keeper.settings.drain_timeout + 1.0)
