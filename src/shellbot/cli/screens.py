"""What the vote shows on a terminal: the host's live screen and the joiner's lines.

The screens are the vote's views (``HostView`` and ``JoinView`` of ``_vote``): the
vote reports to them, they render, and nothing else here touches the bus.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .._settings import redacted
from .._vote.messages import short_name
from ._common import stamp

if TYPE_CHECKING:
    from .._vote.host import VoteHost
    from .._vote.messages import Ballot, Closed, Question, Welcome
    from .._vote.tally import Outcome, Result


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
        self.ballot_task: TaskID | None = None
        self.vote: VoteHost | None = None
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

    def started(self, vote: VoteHost) -> None:
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
                f"{_join_keys(vote.settings.curve)}"
            )
        self.progress.update(self.ready_task, total=len(vote.tally.registered))
        self.live.start()

    def gathering(self, vote: VoteHost, wait_left: float) -> None:
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

    def asked(self, vote: VoteHost) -> None:
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
            f"Asked {len(tally.asked)} voters, due at {stamp(vote.asked_wall)}; "
            f"the vote closes {vote.settings.timeout:g} s later"
        )
        self.ballot_task = self.progress.add_task("Ballots", total=len(tally.asked), note="")

    def outcome(self, vote: VoteHost, outcome: Outcome) -> None:
        if outcome.kind == "counted" and self.ballot_task is not None:
            self.progress.update(
                self.ballot_task,
                completed=len(vote.tally.ballots),
                note=f"last: {outcome.voter} -> {outcome.option}",
            )
        elif outcome.kind == "rejected":
            self.line(("x ", "red"), f"rejected a ballot from {outcome.voter}: {outcome.reason}")
        elif outcome.kind == "deduplicated":
            self.line(("= ", "cyan"), f"{outcome.voter}'s ballot came again: counted once")
        elif outcome.kind == "late":
            self.line(
                ("~ ", "yellow"),
                f"late ballot from {outcome.voter} ({outcome.option}), {outcome.reason}: "
                "not counted",
            )

    def restarted(self, worker: str) -> None:
        self.line(("↻ ", "yellow"), f"started again: {worker}, its voters go on where they were")

    def closed(self, vote: VoteHost) -> None:
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

    def result(self, result: Result) -> None:
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
        if result.deduplicated or result.deduplicated_by_bus:
            self.line(
                ("Deduplicated: ", "bold"),
                f"{result.deduplicated + result.deduplicated_by_bus} ballots arrived twice, "
                f"counted once ({result.deduplicated} sent again by a restarted voter, "
                f"{result.deduplicated_by_bus} delivered again by the network)",
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

    def welcomed(self, welcome: Welcome, workers: int) -> None:
        names = [short_name(channel) for channel in welcome.voters]
        span = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        self.console.print(
            Text.assemble(
                ("Joined vote ", "bold"),
                (welcome.vote, "bold cyan"),
                f": {len(names)} voters ({span}) in {workers} worker processes",
            )
        )
        self.console.print(Text.assemble(("Question: ", "bold"), welcome.question))
        self.console.print(Text.assemble(("Options:  ", "bold"), ", ".join(welcome.options)))

    def asked(self, question: Question) -> None:
        self.console.print(f"Asked, due at {stamp(question.due)}")

    def voted(self, channel: str, ballot: Ballot) -> None:
        self.console.print(
            f"  {short_name(channel)} voted {ballot.option} after {ballot.think:.2f} s"
        )

    def finish(self, closed: Closed) -> None:
        self.console.print()
        self.console.print(Text("Result of the vote:", style="bold"))
        self.console.print(bars(closed.counts, closed.asked, closed.winners))
        winners = closed.winners
        self.console.print(
            Text.assemble(
                ("Winner: " if len(winners) == 1 else "Tie: ", "bold"),
                " and ".join(winners) or "none",
                f" ({closed.counted} of {closed.asked} voted)",
            )
        )


def _join_keys(curve: dict[str, str]) -> str:
    """The CURVE options a joiner of a secured vote needs: the hub's public certificate
    (NAME.key beside the host's NAME.key_secret) and a secret key of its own."""
    server_key = curve.get("server_key")
    if not server_key:
        return ""
    public = server_key.removesuffix("_secret")
    return f" --curve-server-key {public} --curve-client-key YOURS.key_secret"
