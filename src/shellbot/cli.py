"""``shellbot-bus``: the bus from a terminal.

Commands: ``vote`` (the spec's distributed vote), ``hub``, ``spy``, ``publish``
and ``bench``. Every command takes ``--address`` (or ``SHELLBOT_BUS_ADDRESS``).

Exit codes, for every command:

- 0: done (a vote that closed, by its last ballot or by its timeout, is done);
- 1: the bus could not be used, or the command failed on it (no hub answered,
  the address is held by something else, the NATS server refused the
  credentials, no voter got ready, a join refused);
- 2: a usage error: an unknown option, a bad value, an invalid address, ``hub``
  on an address where it has nothing to run (nats://, memory://, inproc://);
- 3: invalid input: a message or a line of standard input that is not JSON, or
  too large for the bus;
- 130: interrupted by Ctrl-C (``hub`` and ``spy`` stop on it with 0);
- 143: stopped by SIGTERM (``hub`` and ``spy`` stop on it with 0).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import SimpleNamespace
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console, Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

try:  # recent typers carry their own click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:
    from click.exceptions import ClickException as _ClickException  # type: ignore[no-redef]

from . import __version__
from ._settings import DEFAULT_ADDRESS, BusSettings, check_address, redacted
from ._transports.base import HUB_COUNTERS, HubKind
from .errors import ConfigurationError, MessageTooLarge, ShellbotError

ENV_ADDRESS = "SHELLBOT_BUS_ADDRESS"
# The files a NATS server may ask for, as bus.nats.* settings: the commands read them here.
ENV_NATS = {
    key: f"SHELLBOT_BUS_NATS_{key.upper()}"
    for key in ("credentials", "nkey_seed", "tls_ca", "tls_cert", "tls_key")
}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a process killed so
READY_TIMEOUT = 10.0  # how long spy waits for its subscription to be confirmed
PROBE_TIMEOUT = 2.0  # how long hub waits for the holder of its address to answer a probe

EXIT_CODES = (
    "**Exit codes**: 0 done; 1 the bus could not be used or the command failed on it; "
    "2 usage error (bad option, invalid address); 3 input that is not JSON, or a message "
    "over the size limit; 130 interrupted (Ctrl-C); 143 stopped by SIGTERM."
)


def _epilog(*examples: str) -> str:
    """The examples and exit codes shown at the end of a command's help."""
    lines = "\n".join(f"    {example}" for example in examples)
    return f"**Examples**\n\n{lines}\n\n{EXIT_CODES}"


app = typer.Typer(
    name="shellbot-bus",
    help=(
        "An information bus between publishers and subscribers: channels are strings, "
        "messages are JSON values. Nothing to set up: the first program on an address "
        "holds the hub (on nats://, the NATS server is the hub)."
    ),
    epilog=_epilog(
        "shellbot-bus vote",
        "shellbot-bus spy --address tcp://127.0.0.1:6000",
        "SHELLBOT_BUS_ADDRESS=tcp://127.0.0.1:6000 shellbot-bus publish news '\"hi\"'",
        "shellbot-bus spy --address nats://alice:secret@nats.example:4222",
    ),
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Address = Annotated[
    str,
    typer.Option(
        "--address",
        "-a",
        envvar=ENV_ADDRESS,
        metavar="ADDRESS",
        help="The bus address: tcp://HOST:PORT (publishers use PORT + 1), ipc://PATH, "
        "inproc://NAME, memory://NAME, or a NATS server: nats://[USER:PASSWORD@ or "
        "TOKEN@]HOST:PORT, several joined by commas for a cluster (files it may ask for: "
        "SHELLBOT_BUS_NATS_CREDENTIALS, _NKEY_SEED, _TLS_CA, _TLS_CERT, _TLS_KEY).",
    ),
]

# bus.curve.* from the command line (or the environment), for hub and vote.
CurveServerKey = Annotated[
    str | None,
    typer.Option(
        "--curve-server-key",
        envvar="SHELLBOT_BUS_CURVE_SERVER_KEY",
        metavar="FILE",
        help="bus.curve.server_key: the hub's certificate (NAME.key_secret where the hub "
        "runs, NAME.key elsewhere).",
    ),
]
CurveClientKey = Annotated[
    str | None,
    typer.Option(
        "--curve-client-key",
        envvar="SHELLBOT_BUS_CURVE_CLIENT_KEY",
        metavar="FILE",
        help="bus.curve.client_key: this program's secret certificate (NAME.key_secret).",
    ),
]
CurveAuthorized = Annotated[
    str | None,
    typer.Option(
        "--curve-authorized",
        envvar="SHELLBOT_BUS_CURVE_AUTHORIZED",
        metavar="DIR",
        help="bus.curve.authorized: the folder of public certificates the hub accepts.",
    ),
]


def _curve(
    server_key: str | None, client_key: str | None, authorized: str | None
) -> dict[str, str]:
    """The bus.curve.* keys given, checked at once (a usage error names the option)."""
    given = {"server_key": server_key, "client_key": client_key, "authorized": authorized}
    curve = {key: value for key, value in given.items() if value}
    if curve:
        from ._transports._zmq_curve import curve_of

        try:
            curve_of(_with_curve(BusSettings(), curve))
        except ConfigurationError as error:
            fail(str(error), EXIT_USAGE)
    return curve


def _with_curve(settings: BusSettings, curve: dict[str, str]) -> BusSettings:
    import dataclasses

    changes: dict[str, Any] = {f"curve_{key}": value for key, value in curve.items()}
    return dataclasses.replace(settings, **changes)


err = Console(stderr=True, soft_wrap=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is, so the same cleanup runs."""


_command_pid = os.getpid()


def _terminate(*_: Any) -> None:
    if os.getpid() != _command_pid:  # a forked child kept the handler: end as SIGTERM does
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


class CommandError(Exception):
    """Ends a command with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    raise CommandError(message, code)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def guarded(command: F) -> F:
    """Turns errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        # hub and spy stop on SIGTERM their own way, while they run (_stop_on_signals).
        global _command_pid
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            _command_pid = os.getpid()
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return command(*args, **kwargs)
        except CommandError as error:
            code, message = error.code, str(error)
        except ConfigurationError as error:
            nats = "bus.nats." in str(error)
            where = "SHELLBOT_BUS_NATS_*" if nats else f"--address or {ENV_ADDRESS}"
            code, message = EXIT_USAGE, f"{error} (from {where})"
        except ShellbotError as error:
            code, message = EXIT_FAILED, str(error)
        except Terminated:
            code, message = EXIT_TERMINATED, "stopped by SIGTERM"
        except KeyboardInterrupt:
            code, message = EXIT_INTERRUPTED, "interrupted"
        err.print(Text.assemble(("shellbot-bus: error: ", "bold red"), _one_line(message)))
        raise typer.Exit(code)

    return run  # type: ignore[return-value]


def nats_settings() -> dict[str, str]:
    """The bus.nats.* settings that the environment gives (SHELLBOT_BUS_NATS_*)."""
    return {key: os.environ[name] for key, name in ENV_NATS.items() if os.environ.get(name)}


def bus_settings(address: str) -> dict[str, Any]:
    """What a command puts under ``bus`` in its context."""
    return {"address": address, "nats": nats_settings()}


def checked(address: str, option: str = "--address") -> str:
    """The address when the bus can use it; a usage error naming ``option`` otherwise."""
    try:
        check_address(address)
    except ConfigurationError as error:
        if option == "--address":
            raise  # guarded() names --address and the environment variable
        fail(str(error).replace("bus.address", option, 1), EXIT_USAGE)
    return address


def _stamp(moment: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if moment is None else moment).strftime(
        "%H:%M:%S.%f"
    )[:-3]


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", metavar="", help="Print the version and exit.", is_eager=True),
    ] = False,
) -> None:
    if version:
        typer.echo(f"shellbot-bus {__version__}")
        raise typer.Exit(EXIT_OK)


# -- vote ------------------------------------------------------------------------------


@app.command(
    epilog=_epilog(
        "shellbot-bus vote",
        "shellbot-bus vote --voters 50 --seed 7 --option yes --option no",
        "shellbot-bus vote --address tcp://0.0.0.0:5555 --wait 30 --expect 5",
        "shellbot-bus vote --join tcp://HOST:5555 --voters 5      # from another terminal",
    )
)
@guarded
def vote(
    ctx: typer.Context,
    voters: Annotated[
        int,
        typer.Option(
            "--voters", "-n", min=1, max=1000, metavar="N", help="Voters to host (or to add)."
        ),
    ] = 20,
    question: Annotated[
        str, typer.Option("--question", "-q", metavar="TEXT", help="The question.")
    ] = "Where shall we have lunch?",
    options: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            metavar="OPTION",
            help="An option; repeat it for each (default: pizza, sushi, salad, tacos).",
        ),
    ] = None,
    think: Annotated[
        float,
        typer.Option(
            "--think", min=0.0, metavar="SECONDS", help="Longest think time of a voter, seconds."
        ),
    ] = 2.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            metavar="SECONDS",
            help="Seconds from the question to the closing.",
        ),
    ] = 30.0,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            min=0.0,
            metavar="SECONDS",
            help="Seconds to wait for joiners before asking (default: 0, or 60 with "
            "--expect); with --join, seconds to wait for a vote to take us (default: 10).",
        ),
    ] = None,
    expect: Annotated[
        int,
        typer.Option(
            "--expect",
            min=0,
            metavar="N",
            help="Ask as soon as this many joined voters are ready.",
        ),
    ] = 0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, max=64, metavar="N", help="Worker processes hosting the voters."
        ),
    ] = 4,
    seed: Annotated[
        int | None,
        typer.Option("--seed", metavar="N", help="Makes choices and think times reproducible."),
    ] = None,
    join: Annotated[
        str | None,
        typer.Option(
            "--join",
            metavar="ADDRESS",
            help="Add --voters voters to the vote running there (the bus address of its host; "
            "--address is not used then).",
        ),
    ] = None,
    address: Address = DEFAULT_ADDRESS,
    curve_server_key: CurveServerKey = None,
    curve_client_key: CurveClientKey = None,
    curve_authorized: CurveAuthorized = None,
) -> None:
    """Run the spec's distributed vote: a group channel asks N direct channels, which answer.

    The group channel broadcasts the question at a due time to every voter's
    channel (pattern 1); voters, in a few worker processes, each answer on their
    own channel after a random think time (pattern 2); the group tallies ballots
    live, then shows the result, the participation and the time from question to
    last ballot. Ballots after --timeout are reported as late and not counted.
    """
    from ._vote import VoteHost, VoteSettings, join_vote

    console = Console(highlight=False)
    curve = _curve(curve_server_key, curve_client_key, curve_authorized)
    if join is not None:
        checked(join, "--join")
        source = ctx.get_parameter_source("address")
        if source is not None and source.name == "COMMANDLINE":
            fail(
                "--join names the address of the vote to join, so --address would go unused: "
                "give --join alone",
                EXIT_USAGE,
            )
        joiner = JoinScreen(console)
        closed = join_vote(
            join, voters, workers, 10.0 if wait is None else wait, joiner, curve, nats_settings()
        )
        joiner.finish(closed)
        return
    settings = VoteSettings(
        address=checked(address),
        question=question,
        options=list(options) if options else ["pizza", "sushi", "salad", "tacos"],
        voters=voters,
        workers=workers,
        think=think,
        timeout=timeout,
        wait=wait if wait is not None else (60.0 if expect else 0.0),
        expect=expect,
        seed=seed,
        curve=curve,
        nats=nats_settings(),
    )
    if len(set(settings.options)) < 2:
        fail("a vote needs at least two different options (--option A --option B)", EXIT_USAGE)
    screen = HostScreen(console, settings.address)
    try:
        result = VoteHost(settings, screen).run()
    finally:
        screen.stop()
    screen.result(result)


class HostScreen:
    """What the host shows: log lines above a live area (progress and running tally)."""

    def __init__(self, console: Console, address: str) -> None:
        self.console = console
        self.address = address
        self.progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
        )
        self.ready_task = self.progress.add_task("Voters ready", total=None, note="")
        self.ballot_task: Any = None
        self.vote: Any = None
        self.live = Live(
            get_renderable=self._render,
            console=console,
            transient=True,
            refresh_per_second=10,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.ready_since = time.monotonic()

    def _render(self) -> RenderableType:
        if self.vote is None or self.vote.tally.due is None:
            return self.progress
        return Group(self.progress, bars(self.vote.tally.counts, len(self.vote.tally.asked)))

    def line(self, *parts: str | tuple[str, str]) -> None:
        self.console.print(Text.assemble(*parts), soft_wrap=True)

    def started(self, vote: Any) -> None:
        self.vote = vote
        if vote.broker:
            where = f"{vote.broker} is the hub"
        elif vote.holds_hub:
            where = "this process holds the hub"
        else:
            where = "using the hub already there"
        unit = "worker threads" if vote.in_threads else "worker processes"
        self.line(
            ("Vote ", "bold"),
            (vote.vote_id, "bold cyan"),
            f" on {redacted(vote.settings.address)} ({where}), seed {vote.seed}",
        )
        self.line(("Question: ", "bold"), vote.settings.question)
        self.line(("Options:  ", "bold"), ", ".join(vote.tally.options))
        self.line(f"{vote.settings.voters} voters in {vote.worker_count} {unit}")
        if vote.settings.wait > 0:
            self.line(
                f"Waiting up to {vote.settings.wait:g} s for more voters: "
                f"shellbot-bus vote --join {_reachable(vote.settings.address)} --voters 5"
            )
        self.progress.update(self.ready_task, total=len(vote.tally.registered))
        self.live.start()

    def gathering(self, vote: Any, wait_left: float) -> None:
        note = f"waiting for joiners, {wait_left:.0f} s left" if wait_left > 0 else ""
        self.progress.update(
            self.ready_task,
            completed=len(vote.tally.ready),
            total=len(vote.tally.registered),
            note=note,
        )

    def joined(self, origin: str, voters: list[str]) -> None:
        span = voters[0] if len(voters) == 1 else f"{voters[0]}..{voters[-1]}"
        self.line(("+ ", "green"), f"{len(voters)} voters joined from {origin} ({span})")

    def refused(self, origin: str, reason: str) -> None:
        self.line(("! ", "yellow"), f"refused voters from {origin}: {reason}")

    def asked(self, vote: Any) -> None:
        tally = vote.tally
        ready_after = time.monotonic() - self.ready_since
        self.progress.remove_task(self.ready_task)
        self.line(
            f"{len(tally.asked)} voters ready after {ready_after:.2f} s"
            + (
                f"; left out, not ready: {len(tally.registered) - len(tally.asked)}"
                if len(tally.asked) < len(tally.registered)
                else ""
            )
        )
        expect = vote.settings.expect
        if expect:
            joined = sum(1 for channel in tally.asked if tally.registered[channel] != "local")
            short = joined < expect
            self.line(
                ("Joined: ", "bold"),
                (f"{joined} of {expect} expected voters", "yellow" if short else ""),
                f", after waiting {time.monotonic() - self.ready_since:.0f} s" if short else "",
            )
        self.line(
            f"Asked {len(tally.asked)} voters, due at {_stamp(vote.asked_wall)}; "
            f"the vote closes {vote.settings.timeout:g} s later"
        )
        self.ballot_task = self.progress.add_task("Ballots", total=len(tally.asked), note="")

    def outcome(self, vote: Any, outcome: Any) -> None:
        if outcome.kind == "counted":
            self.progress.update(
                self.ballot_task,
                completed=len(vote.tally.ballots),
                note=f"last: {outcome.voter} -> {outcome.option}",
            )
        elif outcome.kind == "rejected":
            self.line(("x ", "red"), f"rejected a ballot from {outcome.voter}: {outcome.reason}")
        elif outcome.kind == "late":
            self.line(
                ("~ ", "yellow"),
                f"late ballot from {outcome.voter} ({outcome.option}), {outcome.reason}: "
                "not counted",
            )

    def closed(self, vote: Any) -> None:
        tally = vote.tally
        if not tally.complete:
            self.line(
                ("Closed by the timeout", "yellow"),
                f" after {vote.settings.timeout:g} s: {len(tally.ballots)} of "
                f"{len(tally.asked)} voted",
            )
        self.stop()

    def stop(self) -> None:
        if self.live.is_started:
            self.live.stop()

    def result(self, result: Any) -> None:
        console = self.console
        console.print()
        console.print(Text.assemble(("Result: ", "bold"), result.question))
        console.print(bars(result.counts, result.asked, result.winners))
        share = result.counted / result.asked if result.asked else 0.0
        if result.winners:
            best = result.counts[result.winners[0]]
            if len(result.winners) == 1:
                self.line(
                    ("Winner: ", "bold"), f"{result.winners[0]}, {best} of {result.counted} ballots"
                )
            else:
                names = ", ".join(result.winners[:-1]) + " and " + result.winners[-1]
                plural = "ballot" if best == 1 else "ballots"
                self.line(("Tie: ", "bold"), f"{names}, {best} {plural} each")
        else:
            self.line(("No ballot counted", "bold red"))
        self.line(
            ("Participation: ", "bold"),
            f"{result.counted} of {result.asked} voters ({share:.0%})",
        )
        if result.last_ballot_after is not None:
            self.line(("Question to last ballot: ", "bold"), f"{result.last_ballot_after:.2f} s")
        self.line(
            ("Late ballots: ", "bold"),
            f"{len(result.late) or 'none'}",
            ("  Rejected ballots: ", "bold"),
            f"{len(result.rejected) or 'none'}",
            ("  Silent voters: ", "bold"),
            f"{len(result.silent) or 'none'}",
        )
        if result.late:
            self.line(("Late, not counted: ", "bold"), ", ".join(o.voter for o in result.late))
        if result.silent:
            self.line(
                (f"Silent, no ballot by {result.grace:g} s after the close: ", "bold"),
                ", ".join(result.silent),
            )
        if result.not_ready:
            self.line(("Not ready, left out: ", "bold"), ", ".join(result.not_ready))


def _reachable(address: str) -> str:
    """The address as others would type it (a hub on every interface is reached by
    name), without the secret of its credentials, which the reader knows."""
    scheme, rest = address.split("://", 1)
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host in ("*", "0.0.0.0"):
        return f"tcp://{socket.gethostname()}:{port}"
    return redacted(address)


def bars(counts: dict[str, int], total: int, winners: list[str] | None = None) -> Table:
    """A bar chart of the counts: one row per option."""
    table = Table.grid(padding=(0, 1))
    table.add_column(width=1)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    width = 32
    top = max(counts.values(), default=0) or 1
    palette = ("cyan", "magenta", "green", "yellow", "blue", "red")
    for index, (option, count) in enumerate(counts.items()):
        eighths = round(count / top * width * 8)
        bar = "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
        style = palette[index % len(palette)]
        if winners and option in winners:
            style = f"bold {style}"
        share = f"{count / total:.0%}" if total else "-"
        label, drawn = Text(option, style=style), Text(bar.ljust(width), style=style)
        table.add_row("", label, drawn, str(count), share)
    return table


class JoinScreen:
    """What a joiner shows: the voters it added, their ballots, the result."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()

    def welcomed(self, welcome: dict[str, Any], workers: int) -> None:
        from ._vote import short_name

        names = [short_name(channel) for channel in welcome["voters"]]
        span = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        self.console.print(
            Text.assemble(
                ("Joined vote ", "bold"),
                (welcome["vote"], "bold cyan"),
                f": {len(names)} voters ({span}) in {workers} worker processes",
            )
        )
        self.console.print(Text.assemble(("Question: ", "bold"), welcome["question"]))
        self.console.print(Text.assemble(("Options:  ", "bold"), ", ".join(welcome["options"])))

    def message(self, message: Any) -> None:
        from ._vote import short_name

        body = message.message
        if body["kind"] == "question":
            self.console.print(f"Asked, due at {_stamp(float(body['due']))}")
        elif body["kind"] == "ballot":
            self.console.print(
                f"  {short_name(message.channel)} voted {body.get('option')} "
                f"after {body.get('think', 0):.2f} s"
            )

    def finish(self, closed: dict[str, Any]) -> None:
        counts = closed.get("counts", {})
        self.console.print()
        self.console.print(Text("Result of the vote:", style="bold"))
        self.console.print(bars(counts, int(closed.get("asked", 0)), closed.get("winners")))
        winners = closed.get("winners") or []
        self.console.print(
            Text.assemble(
                ("Winner: " if len(winners) == 1 else "Tie: ", "bold"),
                " and ".join(winners) or "none",
                f" ({closed.get('counted')} of {closed.get('asked')} voted)",
            )
        )


# -- hub -------------------------------------------------------------------------------


@app.command(
    epilog=_epilog("shellbot-bus hub", "shellbot-bus hub --address tcp://0.0.0.0:5555")
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
    from ._transports import transport_for
    from ._transports.zmq import inbound_address

    curve = _curve(curve_server_key, curve_client_key, curve_authorized)
    settings = _with_curve(BusSettings(address=checked(address)), curve)
    transport = transport_for(settings)
    if transport.hub_kind is HubKind.BROKER:
        fail(
            f"{redacted(address)} needs no hub: {transport.broker_name} is the hub, already "
            "running; publishers and subscribers use it as it is",
            EXIT_USAGE,
        )
    if transport.process_local:
        fail(f"{address} lives inside one process: a hub for it would serve no one", EXIT_USAGE)
    if curve:
        from ._transports._zmq_curve import curve_of, holding_refused

        secured = curve_of(settings)  # tcp:// only: a usage error otherwise
        refused = holding_refused(secured) if secured is not None else None
        if refused is not None:
            fail(f"cannot run a hub: {refused}", EXIT_USAGE)
    stop = threading.Event()
    with _stop_on_signals(stop):
        the_hub = transport.open_hub()
        if the_hub is None:
            fail(_why_taken(settings, transport))
        console = Console(highlight=False, soft_wrap=True)

        def log(*parts: str | tuple[str, str]) -> None:
            console.print(Text.assemble((_stamp() + " ", "dim"), *parts))

        inbound = inbound_address(settings)
        log(("hub up", "bold green"), f": subscribers at {address}, publishers at {inbound}")
        watcher = _Connections(settings.address, inbound)
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


def _why_taken(settings: BusSettings, transport: Any) -> str:
    """Why a hub could not bind the address: not an address of this machine, held by
    another program, or held by a hub (which answers the bus's probe)."""
    address = settings.address
    scheme, rest = address.split("://", 1)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        host = "0.0.0.0" if host == "*" else host.strip("[]")
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host, int(port)))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return (
                    f"cannot bind {address} ({error.strerror}): a hub binds an address of its "
                    "own machine; tcp://0.0.0.0:PORT takes every interface"
                )
    foreign = transport.not_a_hub()
    if foreign is not None:
        return foreign
    if _hub_answers(settings, PROBE_TIMEOUT):
        return (
            f"{address} is taken by a hub, which answered the bus's probe: publishers and "
            "subscribers can use it as it is"
        )
    return (
        f"{address} is taken by a program that speaks ZeroMQ but did not answer the bus's "
        f"probe within {PROBE_TIMEOUT:g} s: not a hub of this bus (or one whose inbound side "
        "is not the usual one); stop that program, or use another address"
    )


def _hub_answers(settings: BusSettings, timeout: float) -> bool:
    """True when a probe sent to the hub's inbound side comes back at the address."""
    import dataclasses

    from . import _codec, _outbox
    from ._transports import transport_for

    # Probes that no hub takes must not hold the command at exit.
    settings = dataclasses.replace(settings, linger=0.0)
    probe = _codec.PROBE + os.urandom(8).hex().encode()
    receiver = transport_for(settings).open_receiver()
    try:
        receiver.subscribe(probe)
        outbox = _outbox.outbox_for(settings)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            outbox.send_control(probe)
            frames = receiver.receive(min(0.1, left))
            if frames is not None and frames[0] == probe:
                return True
        return False
    finally:
        receiver.close()


def _counters(stats: dict[str, int], last: dict[str, int]) -> str:
    parts = []
    for name in HUB_COUNTERS:
        value = stats.get(name, 0)
        delta = value - last.get(name, 0)
        parts.append(f"{name} {value}" + (f" ({delta:+d})" if last and delta else ""))
    return ", ".join(parts)


class _Connections:
    """Connections to the hub's TCP ports, seen through psutil (a dependency of the install)."""

    def __init__(self, address: str, inbound: str) -> None:
        self.sides: dict[int, str] = {}
        for side, where in (("subscriber", address), ("publisher", inbound)):
            scheme, rest = where.split("://", 1)
            if scheme == "tcp":
                self.sides[int(rest.rpartition(":")[2])] = side
        self.known: set[tuple[str, str]] = set()
        try:
            import psutil

            self.process: Any = psutil.Process()
        except ImportError:  # an install without its dependencies: say so, log counters
            self.process = None
            if self.sides:
                err.print("Connections are not logged: psutil is missing (pip install psutil)")

    def changes(self) -> Iterator[tuple[tuple[str, str], str]]:
        if self.process is None or not self.sides:
            return
        list_connections = (
            getattr(self.process, "net_connections", None) or self.process.connections
        )
        try:
            connections = list_connections(kind="tcp")
        except Exception:  # psutil may be denied a look; the hub goes on without it
            return
        now = {
            (self.sides[c.laddr.port], f"{c.raddr.ip}:{c.raddr.port}")
            for c in connections
            if c.raddr and c.laddr.port in self.sides and c.status == "ESTABLISHED"
        }
        for side, peer in sorted(now - self.known):
            yield ("connected", "green"), f" {side} from {peer}"
        for side, peer in sorted(self.known - now):
            yield ("disconnected", "yellow"), f" {side} from {peer}"
        self.known = now


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop`` instead of raising, for a clean stop."""
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, lambda *_: stop.set())
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# -- keygen ----------------------------------------------------------------------------


@app.command(
    epilog=_epilog(
        "shellbot-bus keygen hub --dir keys      # on the machine that holds the hub",
        "shellbot-bus keygen alice --dir keys    # on each machine that connects",
    )
)
@guarded
def keygen(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The key's name (a file name).")],
    folder: Annotated[
        str,
        typer.Option("--dir", metavar="DIR", help="Where to write the key pair."),
    ] = ".",
) -> None:
    """Write a CURVE key pair: DIR/NAME.key (public, to copy) and DIR/NAME.key_secret
    (secret, readable by its owner only); never overwrites.

    Use them as bus.curve.server_key, bus.curve.client_key and bus.curve.authorized
    (see the README's "Secured with CURVE").
    """
    from ._keys import keygen as make_pair

    try:
        public, secret = make_pair(name, folder)
    except (ConfigurationError, OSError) as error:
        fail(str(error))  # not about --address, which guarded() would name
    typer.echo(f"public key {public} (copy it), secret key {secret} (keep it here)")


# -- spy -------------------------------------------------------------------------------


@app.command(
    epilog=_epilog(
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
) -> None:
    """Print every message on some channels, with its channel and time, as it passes.

    Colored on a terminal; --json prints one JSON object per line for pipes. The
    spy keeps the bus up while it runs, so a publisher elsewhere finds a hub (on
    nats://, the NATS server does). Ctrl-C or SIGTERM stops it.
    """
    from ._transports import transport_for
    from .bus import Bus
    from .context import Context

    wanted = list(channels) if channels else [""]
    if any(not channel for channel in channels or []):
        fail("a channel is a non-empty string; give no channel to watch them all", EXIT_USAGE)
    context = Context({"bus": bus_settings(checked(address))})
    bus = Bus(context)
    bus.check()
    shown = redacted(address)
    # A broker is up already: nothing for a publisher of ours to keep up.
    keeps = transport_for(BusSettings.from_context(context)).hub_kind is HubKind.EMBEDDED
    stop = threading.Event()
    with _stop_on_signals(stop):
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


def _spy_loop(subscriber: Any, json_lines: bool, count: int, stop: threading.Event) -> None:
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
                        (_stamp(now), "dim"),
                        " ",
                        (message.channel, f"bold {style}"),
                        " ",
                        highlight(Text(body)),
                    )
                )
            else:
                sys.stdout.write(f"{_stamp(now)} {message.channel} {body}\n")
                sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (spy | head): that is an end, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# -- publish ---------------------------------------------------------------------------


@app.command(
    epilog=_epilog(
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
) -> None:
    """Publish one JSON message on a channel, or one message per line of standard input.

    A line that is not JSON stops the command with an error naming the line
    (exit 3); the lines before it are sent. Blank lines are skipped.
    """
    from .bus import Bus
    from .context import Context

    if not channel:
        fail("a channel is a non-empty string", EXIT_USAGE)
    first = None if message is None else _parse(message, "MESSAGE")
    context = Context({"bus": bus_settings(checked(address))})
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


def _put(publisher: Any, channel: str, value: Any, where: str) -> None:
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


# -- bench -----------------------------------------------------------------------------


@app.command(
    epilog=_epilog(
        "shellbot-bus bench --quick",
        "shellbot-bus bench --only T1,T2 --json bench.json",
        "shellbot-bus bench --only T1,T2 --curve",
        "shellbot-bus bench --transport nats",
        "shellbot-bus bench --nats-url nats://127.0.0.1:4222",
    )
)
@guarded
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", metavar="", help="A smoke run of seconds.")
    ] = False,
    json_file: Annotated[
        str | None, typer.Option("--json", metavar="FILE", help="Also write the figures here.")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="T1,T2", help="Run only these workloads."),
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(
            "--transport",
            metavar="zmq|nats",
            help="zmq (the default): the bus's hub against bare pyzmq; nats: the bus on "
            "nats:// against bare nats-py, on a nats-server started for the run.",
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            metavar="nats://HOST:PORT",
            help="Run on NATS, on this server rather than one started for the run.",
        ),
    ] = None,
    curve: Annotated[
        bool,
        typer.Option(
            "--curve",
            metavar="",
            help="Also run T1 and T2 secured with CURVE, against the plain bus of the run.",
        ),
    ] = False,
    address: Address = DEFAULT_ADDRESS,
) -> None:
    """Measure the bus against a bare client on this machine, and print the ratios.

    The runs use free loopback ports of their own (on NATS, a server of their own, or
    the one of --nats-url under subjects of their own), so they never disturb the bus
    at --address, which is only checked.
    """
    checked(address)
    try:
        from . import bench as benchmark
    except ImportError as error:
        fail(str(error))
    keys = [key for item in only or [] for key in item.split(",") if key.strip()]
    raise typer.Exit(
        benchmark.run(
            quick=quick,
            json_file=json_file,
            only=keys or None,
            transport=transport,
            nats_url=nats_url,
            curve=curve,
        )
    )


def main() -> None:
    """The ``shellbot-bus`` entry point: usage errors too are one line on stderr."""
    command = typer.main.get_command(app)
    _plain_placeholders(command)
    try:
        code = command.main(prog_name="shellbot-bus", standalone_mode=False)
    except _ClickException as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # no command: the help, as asked
            error.show()
            sys.exit(error.exit_code)
        where = getattr(getattr(error, "ctx", None), "command_path", "shellbot-bus")
        err.print(
            Text.assemble(
                ("shellbot-bus: error: ", "bold red"),
                _one_line(error.format_message()),
                f" (see {where} --help)",
            )
        )
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _plain_placeholders(command: Any) -> None:
    """Help shows the metavars people expect (N, SECONDS, CHANNEL...), without the type
    placeholders (<bool>, <list[str]>) that typer draws for flags and arguments."""
    names = SimpleNamespace(help_option_names=["-h", "--help"])
    for each in [command, *getattr(command, "commands", {}).values()]:
        with contextlib.suppress(Exception):  # only looks: help works without it
            help_option = each.get_help_option(names)
            if help_option is not None:
                help_option.metavar = ""
        for param in each.params:
            if param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None


if __name__ == "__main__":
    main()
