"""``shellbot-bus vote``: the spec's distributed vote, hosted or joined."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from .._settings import DEFAULT_ADDRESS
from .._vote.settings import (
    DEFAULT_OPTIONS,
    EXPECT_WAIT,
    JOIN_WAIT,
    MAX_VOTERS,
    MAX_WORKERS,
    VoteSettings,
)
from ._app import app
from ._common import (
    EXIT_USAGE,
    Address,
    CurveAuthorized,
    CurveClientKey,
    CurveServerKey,
    checked,
    curve_options,
    epilog,
    fail,
    guarded,
    nats_settings,
)
from .screens import HostScreen, JoinScreen


@app.command(
    epilog=epilog(
        "shellbot-bus vote",
        "shellbot-bus vote --voters 50 --seed 7 --option yes --option no",
        "shellbot-bus vote --address tcp://0.0.0.0:5555 --wait 30 --expect 5",
        "shellbot-bus vote --address nats://127.0.0.1:4222 --durable",
        "shellbot-bus vote --join tcp://HOST:5555 --voters 5      # from another terminal",
    )
)
@guarded
def vote(
    ctx: typer.Context,
    voters: Annotated[
        int,
        typer.Option(
            "--voters", "-n", min=1, max=MAX_VOTERS, metavar="N", help="Voters to host (or to add)."
        ),
    ] = VoteSettings.voters,
    question: Annotated[
        str, typer.Option("--question", "-q", metavar="TEXT", help="The question.")
    ] = VoteSettings.question,
    options: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            metavar="OPTION",
            help=f"An option; repeat it for each (default: {', '.join(DEFAULT_OPTIONS)}).",
        ),
    ] = None,
    think: Annotated[
        float,
        typer.Option(
            "--think", min=0.0, metavar="SECONDS", help="Longest think time of a voter, seconds."
        ),
    ] = VoteSettings.think,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            metavar="SECONDS",
            help="Seconds from the question to the closing.",
        ),
    ] = VoteSettings.timeout,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            min=0.0,
            metavar="SECONDS",
            help=f"Seconds to wait for joiners before asking (default: {VoteSettings.wait:g}, or "
            f"{EXPECT_WAIT:g} with --expect); with --join, seconds to wait for a vote to take "
            f"us (default: {JOIN_WAIT:g}).",
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
    ] = VoteSettings.expect,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=MAX_WORKERS,
            metavar="N",
            help="Worker processes hosting the voters.",
        ),
    ] = VoteSettings.workers,
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
    durable: Annotated[
        bool,
        typer.Option(
            "--durable",
            metavar="",
            help="On NATS with JetStream: ballots and questions are stored, and a voter "
            "process that dies is started again and misses nothing.",
        ),
    ] = VoteSettings.durable,
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
    from .._vote.host import VoteHost
    from .._vote.joiner import join_vote

    console = Console(highlight=False)
    curve = curve_options(curve_server_key, curve_client_key, curve_authorized)
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
            join,
            voters,
            workers,
            JOIN_WAIT if wait is None else wait,
            joiner,
            curve,
            nats_settings(),
        )
        joiner.finish(closed)
        return
    checked(address)
    try:
        settings = VoteSettings(
            address=address,
            question=question,
            options=list(options or DEFAULT_OPTIONS),
            voters=voters,
            workers=workers,
            think=think,
            timeout=timeout,
            wait=wait if wait is not None else (EXPECT_WAIT if expect else VoteSettings.wait),
            expect=expect,
            seed=seed,
            curve=curve,
            nats=nats_settings(),
            durable=durable,
        )
    except ValueError as error:  # the options: the only value the command does not bound
        fail(f"{error} (--option A --option B)", EXIT_USAGE)
    screen = HostScreen(console, settings.address)
    try:
        result = VoteHost(settings, screen).run()
    finally:
        screen.stop()
    screen.result(result)
