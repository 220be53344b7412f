"""What every command shares: exit codes, the one-line errors, the address and
CURVE options, the settings a command puts in its context, and signals."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from .. import _process
from .._settings import BusSettings, check_address
from .._transports import transport_for
from ..errors import ConfigurationError, ShellbotError

ENV_ADDRESS = "SHELLBOT_BUS_ADDRESS"
# The files a NATS server may ask for, as bus.nats.* settings: the commands read them here.
ENV_NATS = {
    key: f"SHELLBOT_BUS_NATS_{key.upper()}"
    for key in ("credentials", "nkey_seed", "tls_ca", "tls_cert", "tls_key")
}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a process killed so

EXIT_CODES = (
    "**Exit codes**: 0 done; 1 the bus could not be used or the command failed on it; "
    "2 usage error (bad option, invalid address); 3 input that is not JSON, or a message "
    "over the size limit; 130 interrupted (Ctrl-C); 143 stopped by SIGTERM."
)


def epilog(*examples: str) -> str:
    """The examples and exit codes shown at the end of a command's help."""
    lines = "\n".join(f"    {example}" for example in examples)
    return f"**Examples**\n\n{lines}\n\n{EXIT_CODES}"


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

# bus.curve.* from the command line (or the environment), for every command on a bus.
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


def curve_options(
    server_key: str | None, client_key: str | None, authorized: str | None
) -> dict[str, str]:
    """The bus.curve.* keys given, checked at once (a usage error names the option)."""
    given = {"server_key": server_key, "client_key": client_key, "authorized": authorized}
    curve = {key: value for key, value in given.items() if value}
    if curve:
        try:
            # The key files alone: the address is checked with the rest of the settings.
            transport_for(with_curve(BusSettings(), curve)).check()
        except ConfigurationError as error:
            fail(str(error), EXIT_USAGE)
    return curve


def with_curve(settings: BusSettings, curve: dict[str, str]) -> BusSettings:
    changes: dict[str, Any] = {f"curve_{key}": value for key, value in curve.items()}
    return dataclasses.replace(settings, **changes)


err = Console(stderr=True, soft_wrap=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is, so the same cleanup runs."""


_command = _process.Origin()  # the process that set the SIGTERM handler


def _terminate(*_: Any) -> None:
    if not _command.is_current():  # a forked child kept the handler: end as SIGTERM does
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


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def guarded(command: F) -> F:
    """Turns errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        # hub and spy stop on SIGTERM their own way, while they run (_stop_on_signals).
        global _command
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            _command = _process.Origin()
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
        err.print(Text.assemble(("shellbot-bus: error: ", "bold red"), one_line(message)))
        raise typer.Exit(code)

    return run  # type: ignore[return-value]


def nats_settings() -> dict[str, str]:
    """The bus.nats.* settings that the environment gives (SHELLBOT_BUS_NATS_*)."""
    return {key: os.environ[name] for key, name in ENV_NATS.items() if os.environ.get(name)}


def bus_settings(address: str, curve: dict[str, str] | None = None) -> dict[str, Any]:
    """What a command puts under ``bus`` in its context: the address, the bus.nats.*
    files of the environment, and the bus.curve.* options given."""
    return {"address": address, "nats": nats_settings(), "curve": curve or {}}


def checked(address: str, option: str = "--address") -> str:
    """The address when the bus can use it; a usage error naming ``option`` otherwise."""
    try:
        check_address(address)
    except ConfigurationError as error:
        if option == "--address":
            raise  # guarded() names --address and the environment variable
        fail(str(error).replace("bus.address", option, 1), EXIT_USAGE)
    return address


def stamp(moment: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if moment is None else moment).strftime(
        "%H:%M:%S.%f"
    )[:-3]


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop`` instead of raising, for a clean stop."""
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, lambda *_: stop.set())
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
