"""A run of the benchmark: the plan's runs in their order, each side in its turn, then
the report; and the networks they run on (the benchmark's own nats-server, CURVE keys)."""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import report, server
from .harness import ANCHOR, CURVE, OURS
from .network import ZEROMQ, Network
from .options import Plan, UsageError
from .report import Measured


def run(
    quick: bool = False,
    json_file: str | None = None,
    only: list[str] | None = None,
    transport: str | None = None,
    nats_url: str | None = None,
    curve: bool = False,
    nats_sync: str | None = None,
) -> int:
    """Runs the benchmark, prints the table; returns the exit code (0: every run finished,
    1: a run failed or the NATS server could not be had, 2: bad options).

    ``transport``: ``zmq`` (the default) or ``nats``; on NATS, the benchmark starts a
    nats-server of its own on free loopback ports, or uses the one at ``nats_url``.
    ``curve``: T1 and T2 also on a bus secured with CURVE (ZeroMQ only).
    ``nats_sync``: JetStream's ``sync_interval`` on the benchmark's own server (T1d).
    """
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        plan = Plan.from_options(quick, json_file, only, transport, nats_url, curve, nats_sync)
    except UsageError as error:
        console.print(f"[red]{error}")
        return 2
    if plan.transport == "zmq" and plan.curve:
        with tempfile.TemporaryDirectory(prefix="shellbot-bench-keys-") as folder:
            return _measure(console, plan, ZEROMQ, {"curve": True}, _curve_network(folder))
    if plan.transport == "zmq":
        return _measure(console, plan, ZEROMQ, {})
    if _version("nats-py") is None:  # the optional extra
        console.print(
            "[red]--transport nats needs the NATS client, nats-py, which is not installed: "
            "install shellbot's nats extra (from its checkout: pip install '.[nats]')"
        )
        return 1
    own = None
    try:
        if plan.nats_url is None:
            own = server.NatsServer(jetstream=plan.jetstream, sync=plan.nats_sync)
            own.start()
            url = own.url
        else:
            url = plan.nats_url
        info = server.server_info(url)
        versions = {"nats_server": info.get("version"), "nats_py": _version("nats-py")}
        where = {
            "nats_url": server.shown(url),
            "nats_server_started": own is not None,
            "nats_server_pid": None if own is None else own.pid,
            "nats_sync": plan.nats_sync if own is not None else None,
        }
        return _measure(console, plan, Network(url, own), versions | where)
    except server.ServerError as error:
        console.print(f"[red]{error}")
        return 1
    finally:
        if own is not None:
            own.stop()


def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _curve_network(folder: str) -> Network:
    """A ZeroMQ network whose processes all hold the hub's secret and one client key."""
    from .._keys import keygen

    _, hub_secret = keygen("hub", Path(folder) / "keys")
    client_public, client_secret = keygen("client", Path(folder) / "keys")
    authorized = Path(folder) / "authorized"
    authorized.mkdir()
    (authorized / client_public.name).write_bytes(client_public.read_bytes())
    return Network(
        curve={
            "server_key": str(hub_secret),
            "client_key": str(client_secret),
            "authorized": str(authorized),
        }
    )


def _measure(
    console: Console,
    plan: Plan,
    network: Network,
    about: dict[str, Any],
    secured: Network | None = None,
) -> int:
    """Every run of the plan, then the table and the JSON report; the exit code."""
    sizes = plan.sizes
    runs = plan.runs()
    measured: Measured = {key: {OURS: [], ANCHOR: [], CURVE: []} for key in plan.keys}
    errors: list[str] = []
    started = datetime.datetime.now(datetime.timezone.utc)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(runs))
        for workload, round_, side in runs:
            progress.update(
                task, description=f"{workload.key} {workload.title}: {side}, round {round_ + 1}"
            )
            if workload.key not in {error.split(":")[0] for error in errors}:
                try:
                    if side == CURVE:  # ours, on the secured network
                        result = workload.measure(OURS, sizes, secured or network)
                    else:
                        result = workload.measure(side, sizes, network)
                    measured[workload.key][side].append(result)
                except Exception as error:  # one failed run must not hide the others
                    errors.append(f"{workload.key}: {side}: {type(error).__name__}: {error}")
            progress.advance(task)
    transport = network.transport
    rows, workloads = report.summaries(plan.keys, measured, transport)
    report.show(console, rows, plan.quick, transport, about, errors, started)
    if plan.json_file:
        report.write_json(
            plan.json_file, rows, workloads, plan.quick, transport, sizes, about, errors, started
        )
    return 1 if errors else 0
