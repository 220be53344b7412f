"""``shellbot-bus bench``: the bus against a bare client, on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from .._settings import DEFAULT_ADDRESS
from ._app import app
from ._common import Address, checked, epilog, fail, guarded


@app.command(
    epilog=epilog(
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
        typer.Option(
            "--only",
            metavar="T1,T2",
            help="Run only these workloads (T1 to T9; T1d, durable T1, on NATS).",
        ),
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
        from .. import bench as benchmark
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
