"""``shellbot-bus reply``: answer every request on a channel, until stopped."""

from __future__ import annotations

import shlex
import subprocess
import threading
from typing import Annotated, Any

import orjson
import typer

from .._settings import DEFAULT_ADDRESS, redacted
from .._transports import HubKind, transport_of
from ._app import app
from ._common import (
    EXIT_USAGE,
    Address,
    bus_settings,
    checked,
    epilog,
    err,
    fail,
    guarded,
    stop_on_signals,
)
from .publish import _parse

READY_TIMEOUT = 10.0  # how long reply waits for its subscription to be confirmed
COMMAND_TIMEOUT = 30.0  # seconds a --command may take to answer one request


@app.command(
    epilog=epilog(
        """shellbot-bus reply health --json '"ok"'""",
        """shellbot-bus reply resize --group workers --command ./resize.sh""",
        """shellbot-bus reply double --command "jq '. * 2'\"""",
    )
)
@guarded
def reply(
    channel: Annotated[str, typer.Argument(metavar="CHANNEL", help="The channel to answer.")],
    answer: Annotated[
        str | None,
        typer.Option("--json", metavar="JSON", help="Answer every request with this JSON."),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(
            "--command",
            metavar="CMD",
            help="Answer with what CMD prints (JSON; other text goes as a JSON string), "
            "fed the request's JSON on its standard input.",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            metavar="G",
            help="Answer as a member of queue group G: each request goes to one member.",
        ),
    ] = None,
    address: Address = DEFAULT_ADDRESS,
) -> None:
    """Answer each request on a channel, until Ctrl-C (or SIGTERM).

    Give the answer with --json, or --command to run for each request (as `nats
    reply` does): a command that fails, or prints nothing, answers nothing, and
    says so on stderr. Prints how many requests it answered when it stops.
    """
    from ..bus import Bus
    from ..context import Context

    if not channel:
        fail("a channel is a non-empty string", EXIT_USAGE)
    if (answer is None) == (command is None):
        fail("give the answer: --json JSON or --command CMD (one of them)", EXIT_USAGE)
    fixed = None if answer is None else _parse(answer, "--json")
    argv = None if command is None else shlex.split(command)
    if argv is not None and not argv:
        fail("--command is empty", EXIT_USAGE)
    context = Context({"bus": bus_settings(checked(address))})
    bus = Bus(context)
    bus.check()
    shown = redacted(address)
    keeps = transport_of(context).hub_kind is HubKind.EMBEDDED
    stop = threading.Event()
    answered = failed = 0
    with stop_on_signals(stop):
        keeper = bus.publish() if keeps else None
        if keeper is not None:
            keeper.start()
        try:
            with bus.subscribe(channel, group=group) as subscriber:
                if not subscriber.wait_ready(READY_TIMEOUT):
                    fail(f"the bus at {shown} did not confirm the subscription in time")
                member = f" as a member of {group!r}" if group else ""
                err.print(f"Answering requests on {channel!r} at {shown}{member}. Ctrl-C to stop.")
                while not stop.is_set():
                    message = subscriber.receive(block=True, timeout=0.25)
                    if message is None or not message.is_request:
                        continue
                    value = fixed if argv is None else _run(argv, message.message)
                    if value is None:
                        failed += 1
                        continue
                    message.reply(value)
                    answered += 1
        finally:
            if keeper is not None:
                keeper.stop(timeout=keeper.settings.drain_timeout + 1.0)
            plural = "request" if answered == 1 else "requests"
            unanswered = f" ({failed} unanswered: the command failed)" if failed else ""
            err.print(f"Answered {answered} {plural} on {channel!r}{unanswered}")


def _run(argv: list[str], request: Any) -> Any:
    """What the command prints for ``request``: JSON, else the text as a string; None
    (said on stderr) when it fails or prints nothing."""
    try:
        done = subprocess.run(
            argv,
            input=orjson.dumps(request),
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        err.print(f"shellbot-bus: the command did not answer: {error}")
        return None
    if done.returncode != 0:
        first = done.stderr.decode(errors="replace").strip().splitlines()[:1]
        err.print(f"shellbot-bus: the command exited with {done.returncode}: {''.join(first)}")
        return None
    text = done.stdout.strip()
    if not text:
        err.print("shellbot-bus: the command printed nothing: no answer")
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.decode(errors="replace")
    return text.decode(errors="replace") if value is None else value
