"""The ``shellbot-bus`` application: its help, ``--version``, and the entry point."""

from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from rich.text import Text

try:  # recent typers carry their own click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:
    from click.exceptions import ClickException as _ClickException  # type: ignore[no-redef,assignment]

from .. import __version__
from ._common import EXIT_INTERRUPTED, EXIT_OK, epilog, err, one_line

app = typer.Typer(
    name="shellbot-bus",
    help=(
        "An information bus between publishers and subscribers: channels are strings, "
        "messages are JSON values. Nothing to set up: the first program on an address "
        "holds the hub (on nats://, the NATS server is the hub)."
    ),
    epilog=epilog(
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
                one_line(error.format_message()),
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
