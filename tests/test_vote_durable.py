"""The vote with --durable on a JetStream server of the test's own: a voter process
killed during the vote is started again, and every ballot is counted once."""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest
from _nats import NatsNode
from test_cli import Background, run

from shellbot._vote.tally import Tally


def voter_processes(host: int, voters_each: int) -> list[psutil.Process]:
    """The host's worker processes: a thread per voter, the main one and the NATS loop."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        workers = [
            child
            for child in psutil.Process(host).children()
            if child.num_threads() == voters_each + 2
        ]
        if workers:
            return workers
        time.sleep(0.05)
    raise AssertionError("no worker process of the vote found")


@pytest.mark.parametrize("durable", [True, False])
def test_a_voter_process_killed_during_the_vote(jetstream: NatsNode, durable: bool) -> None:
    args = ["vote", "--address", jetstream.url, "--voters", "8", "--workers", "2"]
    args += ["--think", "5", "--timeout", "10", "--seed", "3"]
    host = Background(*args, *(["--durable"] if durable else []))
    try:
        host.wait_for("Asked 8 voters", timeout=30.0)
        victim = voter_processes(host.process.pid, voters_each=4)[0]
        os.kill(victim.pid, signal.SIGKILL)  # while its voters think
        code, output = host.finish(timeout=60.0)
    finally:
        host.stop()
    assert code == 0, output
    participation = re.search(r"Participation: (\d+) of 8 voters", output)
    assert participation is not None, output
    if durable:
        assert "started again: shellbot-voters-" in output
        assert participation.group(1) == "8", output  # every ballot, the killed ones' too
        assert "Rejected ballots: none" in output
    else:
        assert participation.group(1) == "4", output  # at most once: theirs are gone
        assert "Silent voters: 4" in output


def test_durable_needs_a_server_that_stores_messages() -> None:
    result = run("vote", "--address", "tcp://127.0.0.1:5599", "--durable", "--voters", "2")
    assert result.returncode != 0
    assert "needs a server that stores messages" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_ballot_sent_again_by_a_restarted_voter_is_counted_once() -> None:
    from shellbot._vote.messages import Ballot, Ready

    tally = Tally("v1", ["a", "b"], durable=True)
    channel = "vote.v1.voter-01"
    tally.register([channel], "local")
    assert tally.take(channel, Ready("v1", channel).to_body(), 0.0, sender=1).kind == "ready"
    tally.asked, tally.due = [channel], 0.0
    ballot = Ballot("v1", channel, "a", 0.5).to_body()
    assert tally.take(channel, ballot, 1.0, sender=1).kind == "counted"
    # Started again: ready from its new process, and the same ballot from there.
    assert tally.take(channel, Ready("v1", channel).to_body(), 2.0, sender=2).kind == "ready"
    assert tally.take(channel, ballot, 3.0, sender=2).kind == "deduplicated"
    other = Ballot("v1", channel, "b", 0.5).to_body()
    assert tally.take(channel, other, 4.0, sender=2).kind == "rejected"
    result = tally.result("q", by_timeout=False)
    assert result.counts == {"a": 1, "b": 0} and result.deduplicated == 1
