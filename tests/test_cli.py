"""The ``shellbot-bus`` command, driven as a user drives it: in subprocesses, on free ports.

Every wait is bounded. Where one process must be ready before another acts,
the test waits for the line that says so (the spy prints its banner once its
subscription is confirmed live, the vote host once it listens for joiners, the
hub once it is bound), never for a fixed time.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pexpect
import psutil
import pytest

from shellbot import Context
from shellbot._vote.tally import Tally
from shellbot._vote.voters import choose
from shellbot.bus import Bus

CLI = [sys.executable, "-m", "shellbot.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100", "NO_COLOR": "1"}
ENV.pop("SHELLBOT_BUS_ADDRESS", None)
RUN_TIMEOUT = 30.0
ENV_NAME = "SHELLBOT_BUS_ADDRESS"


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env or ENV,
    )


class Background:
    """A command running on its own; its output read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """The first line holding ``text``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; saw {self.seen!r}")

    def finish(self, timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
        """The exit code and all the output, once the command ended by itself."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5.0)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "\n".join(self.seen)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5.0)


@pytest.fixture
def background() -> Iterator[type[Background]]:
    """Starts commands in the background and kills those still running after the test."""
    started: list[Background] = []

    def start(*args: str) -> Background:
        command = Background(*args)
        started.append(command)
        return command

    yield start  # type: ignore[misc]
    for command in started:
        command.stop()


def chart(output: str) -> dict[str, int]:
    """The counts of the result chart: '  pizza ████ 4 20%' rows after 'Result'."""
    rows = output.split("Result", 1)[1].splitlines()
    counts = {}
    for row in rows:
        match = re.match(r"\s+(\w+) [█▏▎▍▌▋▊▉ ]*?\s*(\d+)\s+(\d+%|-)\s*$", row)
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


# -- help and errors -------------------------------------------------------------------


def test_every_command_has_help_with_an_example_and_the_exit_codes() -> None:
    for command in ("vote", "hub", "spy", "publish", "bridge", "bench"):
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Examples" in result.stdout
        assert f"shellbot-bus {command}" in result.stdout
        assert "Exit codes" in result.stdout
        assert "SHELLBOT_BUS_ADDRESS" in result.stdout
    assert "vote" in run("--help").stdout


def test_every_command_is_in_the_command_line_page_table() -> None:
    from shellbot.cli import app

    page = Path(__file__).resolve().parent.parent / "docs" / "guide" / "cli.md"
    table = [line for line in page.read_text().splitlines() if line.startswith("| `shellbot-bus ")]
    for command in app.registered_commands:
        name = command.name or command.callback.__name__  # type: ignore[union-attr]
        assert any(line.startswith(f"| `shellbot-bus {name}") for line in table), name


@pytest.mark.parametrize("command", [["vote"], ["hub"], ["spy"], ["publish", "news", "1"]])
@pytest.mark.parametrize("address", ["nowhere", "tcp://127.0.0.1:99999", "http://127.0.0.1:1"])
def test_an_invalid_address_gets_one_line_and_exit_2(command: list[str], address: str) -> None:
    result = run(*command, "--address", address)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("shellbot-bus: error:")
    assert address in result.stderr


def test_usage_errors_are_one_line_too() -> None:
    for args in (["vote", "--votrs", "3"], ["vote", "--voters", "0"], ["publish"]):
        result = run(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("shellbot-bus: error:")
        assert f"see shellbot-bus {args[0]} --help" in result.stderr


def test_help_shows_plain_metavars() -> None:
    for command in ("vote", "hub", "spy", "publish", "bench"):
        shown = run(command, "--help").stdout
        assert not re.search(r"<(bool|int|float|str|list)", shown), (command, shown)
    assert re.search(r"--think\s+SECONDS", run("vote", "--help").stdout)
    spy = run("spy", "--help").stdout
    assert "CHANNEL..." in spy and "sequence" in spy


def test_join_errors_name_join(tcp_address: str) -> None:
    bare = run("vote", "--join", "127.0.0.1:47650")
    assert bare.returncode == 2
    assert "--join must look like tcp://" in bare.stderr and ENV_NAME not in bare.stderr
    both = run("vote", "--join", tcp_address, "--address", tcp_address)
    assert both.returncode == 2
    assert "give --join alone" in both.stderr
    assert len(both.stderr.strip().splitlines()) == 1


def test_the_address_comes_from_the_environment_too() -> None:
    result = run("spy", env={**ENV, "SHELLBOT_BUS_ADDRESS": "udp://somewhere:1"})
    assert result.returncode == 2
    assert "udp://somewhere:1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.embedded_hub
def test_an_address_of_another_machine_gets_one_line_from_the_hub() -> None:
    result = run("hub", "--address", "tcp://192.0.2.1:5555")  # TEST-NET: never local
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot bind" in result.stderr


# -- spy and publish -------------------------------------------------------------------


def test_spy_sees_what_publish_sends_from_another_process(tcp_address: str, background) -> None:
    news = background("spy", "news", "--json", "--count", "3", "--address", tcp_address)
    news.wait_for("Spying on")
    everything = background("spy", "--count", "4", "--address", tcp_address)
    everything.wait_for("Spying on")

    assert run("publish", "weather", '"rain"', "--address", tcp_address).returncode == 0
    assert run("publish", "news", '{"title": "hello"}', "--address", tcp_address).returncode == 0
    piped = run("publish", "news", "--address", tcp_address, stdin='1\n\n["two", 2]\n')
    assert piped.returncode == 0, piped.stderr
    assert "Published 2 messages" in piped.stderr
    assert "no subscriber" not in piped.stderr  # spies listen (and hold the hub)

    code, output = news.finish()
    assert code == 0
    records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [record["message"] for record in records] == [{"title": "hello"}, 1, ["two", 2]]
    assert {record["channel"] for record in records} == {"news"}
    assert all(isinstance(record["sender"], int) for record in records)  # as Message.sender
    assert all(record["time"] and record["sequence"] for record in records)

    code, output = everything.finish()
    assert code == 0
    lines = [line for line in output.splitlines() if re.match(r"\d\d:\d\d:\d\d", line)]
    assert [line.split(" ", 1)[1] for line in lines] == [
        'weather "rain"',
        'news {"title":"hello"}',
        "news 1",
        'news ["two",2]',
    ]


def test_publish_names_the_bad_line_and_sends_the_lines_before(
    tcp_address: str, background
) -> None:
    spy = background("spy", "lines", "--json", "--count", "2", "--address", tcp_address)
    spy.wait_for("Spying on")
    result = run("publish", "lines", "--address", tcp_address, stdin='1\n{"a": 2}\nnot json\n4\n')
    assert result.returncode == 3
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "line 3 is not JSON" in error[0]
    assert "Traceback" not in result.stderr
    code, output = spy.finish()
    assert code == 0
    records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [record["message"] for record in records] == [1, {"a": 2}]


def test_publish_says_when_no_subscriber_was_listening(tcp_address: str) -> None:
    result = run("publish", "news", '"hello"', "--address", tcp_address)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f"Published 1 message on 'news' at {tcp_address}: no subscriber was listening"
    )


@pytest.mark.parametrize("command", [["hub"], ["spy"], ["publish", "news", "1"], ["vote"]])
@pytest.mark.embedded_hub
def test_a_port_held_by_another_program_is_told_apart_from_a_hub(
    command: list[str], tcp_address: str
) -> None:
    host, port = tcp_address.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as other:  # listens, and never speaks ZeroMQ
        other.bind((host, int(port)))
        other.listen()
        started = time.monotonic()
        result = run(*command, "--address", tcp_address)
        took = time.monotonic() - started
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{tcp_address} is held by another program" in result.stderr
    assert "not a hub" in result.stderr
    assert took < 8.0  # well before bus.start_timeout (10 s)


def test_a_message_too_large_gets_a_hint_the_command_line_can_follow(tcp_address: str) -> None:
    large = orjson.dumps(["x" * 1000] * 1100).decode()  # over the 1 MiB default
    result = run("publish", "big", "--address", tcp_address, stdin=f"1\n{large}\n")
    assert result.returncode == 3
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("shellbot-bus: error: line 2 is too large for the bus")
    assert "split it into smaller messages" in error and "bus.max_message_size" not in error
    assert "Published 1 message" in result.stderr  # the line before it left


def test_publish_refuses_a_message_that_is_not_json(tcp_address: str) -> None:
    result = run("publish", "news", "hello", "--address", tcp_address)
    assert result.returncode == 3
    assert "MESSAGE is not JSON" in result.stderr


# -- hub -------------------------------------------------------------------------------


@pytest.mark.embedded_hub
def test_hub_logs_counters_and_stops_cleanly_on_sigterm(tcp_address: str, background) -> None:
    hub = background("hub", "--interval", "0.2", "--address", tcp_address)
    hub.wait_for("hub up")
    second = run("hub", "--address", tcp_address)
    assert second.returncode == 1
    assert "taken by a hub, which answered the bus's probe" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1

    spy = background("spy", "--address", tcp_address)
    spy.wait_for("Spying on")
    assert run("publish", "news", "[1]", "--address", tcp_address).returncode == 0
    spy.wait_for("news [1]")
    hub.wait_for("connected subscriber")
    # The spy's publisher connects to the hub's inbound side: the command line page shows
    # those lines.
    if not any("connected publisher from 127.0.0.1:" in line for line in hub.seen):
        hub.wait_for("connected publisher from 127.0.0.1:")
    hub.wait_for("forwarded")

    spy.process.send_signal(signal.SIGTERM)
    assert spy.finish()[0] == 0
    hub.process.send_signal(signal.SIGTERM)
    code, output = hub.finish()
    assert code == 0
    assert "stopped: forwarded" in output


@pytest.mark.embedded_hub
def test_what_the_hub_needs_to_log_connections_comes_with_the_install() -> None:
    """`pip install .` alone gives the `connected publisher from ...` lines of the docs."""
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    core = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert re.search(r'"psutil\b', core), core


# -- vote ------------------------------------------------------------------------------


def test_vote_counts_every_ballot_and_a_seed_reproduces_it(tcp_address: str) -> None:
    args = ["vote", "--voters", "6", "--workers", "2", "--think", "0.5", "--seed", "11"]
    first = run(*args, "--address", tcp_address)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Participation: 6 of 6 voters (100%)" in first.stdout
    assert "Question to last ballot:" in first.stdout
    assert "Late ballots: none" in first.stdout and "Rejected ballots: none" in first.stdout
    counts = chart(first.stdout)
    assert set(counts) == {"pizza", "sushi", "salad", "tacos"}
    assert sum(counts.values()) == 6

    again = run(*args, env={**ENV, "SHELLBOT_BUS_ADDRESS": tcp_address})
    assert again.returncode == 0, again.stdout + again.stderr
    assert tcp_address in again.stdout
    assert chart(again.stdout) == counts


@pytest.mark.parametrize("scheme", ["ipc", "memory"])
def test_vote_runs_on_any_address(scheme: str, tmp_path) -> None:
    address = f"ipc://{tmp_path}/bus" if scheme == "ipc" else "memory://lunch"
    result = run("vote", "--voters", "3", "--think", "0.2", "--address", address)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Participation: 3 of 3 voters (100%)" in result.stdout
    unit = "worker threads" if scheme == "memory" else "worker processes"
    assert f"3 voters in 3 {unit}" in result.stdout


def test_voters_join_a_running_vote_from_another_terminal(tcp_address: str, background) -> None:
    host = background(
        "vote", "--voters", "2", "--think", "0.5", "--wait", "20", "--expect", "3",
        "--seed", "4", "--address", tcp_address,
    )  # fmt: skip
    host.wait_for("Waiting up to 20 s")
    joiner = run("vote", "--join", tcp_address, "--voters", "3")
    assert joiner.returncode == 0, joiner.stdout + joiner.stderr
    assert "3 voters (voter-03..voter-05)" in joiner.stdout
    assert len(re.findall(r"voter-0[345] voted", joiner.stdout)) == 3

    code, output = host.finish()
    assert code == 0, output
    assert "3 voters joined" in output
    assert "Participation: 5 of 5 voters (100%)" in output
    assert sum(chart(output).values()) == 5


def test_a_host_expecting_joiners_says_how_many_came(tcp_address: str) -> None:
    result = run(
        "vote", "--voters", "2", "--think", "0.2", "--wait", "1", "--expect", "3",
        "--address", tcp_address,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Joined: 0 of 3 expected voters, after waiting 1 s" in result.stdout
    assert "Participation: 2 of 2 voters (100%)" in result.stdout


def test_vote_rejects_unknown_voters_and_bad_options_and_reports_late_ballots(
    tcp_address: str, background
) -> None:
    host = background(
        "vote", "--voters", "1", "--think", "0.1", "--timeout", "4", "--wait", "20",
        "--expect", "2", "--seed", "1", "--address", tcp_address,
    )  # fmt: skip
    host.wait_for("Waiting up to")

    # A voter of our own making, from the library: it joins two voters, then misbehaves.
    bus = Bus(Context({"bus": {"address": tcp_address}}))
    publisher = bus.publish()
    with bus.subscribe("shellbot.vote.join.t0ken") as replies:
        assert replies.wait_ready(5.0)
        welcome = None
        deadline = time.monotonic() + 10.0
        while welcome is None and time.monotonic() < deadline:
            publisher.put("shellbot.vote.join", {"kind": "join", "token": "t0ken", "voters": 2})
            welcome = replies.get(block=True, timeout=0.5)
    assert welcome and welcome["kind"] == "welcome"
    first, second = welcome["voters"]
    vote_id = welcome["vote"]
    with bus.subscribe([first, second]) as watch:
        assert watch.wait_ready(5.0)
        for channel in (first, second):
            publisher.put(channel, {"kind": "ready", "vote": vote_id, "voter": channel})

        def next_of(kind: str) -> dict:
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                message = watch.get(block=True, timeout=0.5)
                if isinstance(message, dict) and message.get("kind") == kind:
                    return message
            raise AssertionError(f"no {kind} message")

        question = next_of("question")
        ballot = {"kind": "ballot", "vote": vote_id, "option": question["options"][0]}
        # Another process, on the channel of one of our voters: not that voter's ballot.
        forged = orjson.dumps(ballot | {"voter": second}).decode()
        assert run("publish", second, forged, "--address", tcp_address).returncode == 0
        publisher.put(first, ballot | {"voter": first, "option": "durian"})
        publisher.put(first, ballot | {"voter": first})
        publisher.put(first, ballot | {"voter": first})
        stranger = f"vote.{vote_id}.voter-99"
        publisher.put(stranger, ballot | {"voter": stranger})
        next_of("closed")
        publisher.put(second, ballot | {"voter": second})

    code, output = host.finish()
    assert code == 0, output
    assert re.search(r"rejected a ballot from voter-03: sent by \w+, not by the voter's", output)
    assert "rejected a ballot from voter-02: invalid option 'durian'" in output
    assert "rejected a ballot from voter-02: duplicate" in output
    assert "rejected a ballot from voter-99: unknown voter" in output
    assert "late ballot from voter-03" in output
    assert "Closed by the timeout" in output
    assert "Participation: 2 of 3 voters (67%)" in output
    assert "Late ballots: 1  Rejected ballots: 4  Silent voters: none" in output
    assert sum(chart(output).values()) == 2


def test_a_tie_of_one_ballot_each_says_ballot(tcp_address: str) -> None:
    result = run(
        "vote", "--voters", "2", "--think", "0.2", "--seed", "5896", "--address", tcp_address
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Tie: sushi and tacos, 1 ballot each" in result.stdout


def test_vote_stops_on_sigterm_with_143_and_leaves_no_process(tcp_address: str, background) -> None:
    host = background("vote", "--voters", "4", "--think", "20", "--address", tcp_address)
    host.wait_for("Asked 4 voters")
    children = psutil.Process(host.process.pid).children(recursive=True)
    assert children
    host.process.send_signal(signal.SIGTERM)
    code, output = host.finish()
    assert code == 143, output
    assert "shellbot-bus: error: stopped by SIGTERM" in output
    assert "Traceback" not in output  # its workers, ended by SIGTERM too, end quietly
    _, alive = psutil.wait_procs(children, timeout=5.0)
    assert not [process for process in alive if process.status() != psutil.STATUS_ZOMBIE]


def test_every_voter_appears_in_the_outcome_even_when_late_past_the_grace(
    tcp_address: str,
) -> None:
    result = run(
        "vote", "--voters", "10", "--think", "3", "--timeout", "1", "--seed", "2",
        "--address", tcp_address,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    counted = int(re.search(r"Participation: (\d+) of 10", output).group(1))
    summary = re.search(
        r"Late ballots: (\w+)  Rejected ballots: (\w+)  Silent voters: (\w+)", output
    )
    late, rejected, silent = (0 if n == "none" else int(n) for n in summary.groups())
    assert counted + late + rejected + silent == 10, output
    assert silent > 0  # some think past the close and the grace after it
    names = re.search(r"Silent, no ballot by 1 s after the close: (.*)", output).group(1)
    assert len(names.split(", ")) == silent


def test_the_live_view_through_a_pseudo_terminal(tcp_address: str) -> None:
    env = {key: value for key, value in ENV.items() if key not in ("NO_COLOR", "COLUMNS")}
    child = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "vote", "--voters", "4", "--workers", "2", "--think", "1.5", "--seed", "2",
         "--address", tcp_address],
        env=env,
        dimensions=(40, 120),
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
    )  # fmt: skip
    try:
        child.expect("Voters ready|Ballots")
        child.expect(r"Ballots\s.*?[0-3]/4")  # the bar while ballots come in
        child.expect(r"4/4")
        child.expect("Result")
        child.expect("Participation")
        live = child.before
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "\x1b[" in live  # colors and cursor moves: the view redraws in place
    assert "4 of 4 voters (100%)" in child.before


def test_spy_colors_what_it_prints_on_a_terminal(tcp_address: str) -> None:
    env = {key: value for key, value in ENV.items() if key not in ("NO_COLOR", "COLUMNS")}
    child = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "spy", "--count", "1", "--address", tcp_address],
        env=env,
        dimensions=(40, 120),
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
    )
    try:
        child.expect("Spying on")
        assert run("publish", "colors", '{"red": 1}', "--address", tcp_address).returncode == 0
        child.expect("colors")
        child.expect(pexpect.EOF)
        shown = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "\x1b[" in shown and '"red"' in shown


def test_bench_sits_in_the_same_command() -> None:
    result = run("bench", "--help")
    assert result.returncode == 0
    assert "--quick" in result.stdout and "--only" in result.stdout


# -- the vote's logic, without the bus ---------------------------------------------------


def test_a_seed_decides_each_choice_and_think_time() -> None:
    options = ["pizza", "sushi", "salad"]
    picks = [choose(7, number, options, 2.0) for number in range(1, 30)]
    assert picks == [choose(7, number, options, 2.0) for number in range(1, 30)]
    assert {option for option, _ in picks} <= set(options)
    assert all(0.2 <= think <= 2.0 for _, think in picks)
    assert picks != [choose(8, number, options, 2.0) for number in range(1, 30)]


def test_the_tally_counts_rejects_and_reports_late_ballots() -> None:
    tally = Tally("v1", ["yes", "no"])
    one, two, three = (f"vote.v1.voter-0{n}" for n in (1, 2, 3))
    tally.register([one, two, three], "local")
    for channel in (one, two):
        assert tally.take(channel, {"kind": "ready", "voter": channel}, 0.0).kind == "ready"
    tally.asked, tally.due = [one, two], 1.0

    def ballot(channel: str, option: str, voter: str | None = None) -> dict:
        return {"kind": "ballot", "voter": voter or channel, "option": option}

    assert tally.take(one, ballot(one, "maybe"), 1.1).reason == "invalid option 'maybe'"
    assert tally.take(one, ballot(one, "yes", voter=two), 1.1).reason == "unknown voter"
    assert tally.take("vote.v1.voter-99", ballot("vote.v1.voter-99", "yes"), 1.2).reason == (
        "unknown voter"
    )
    assert tally.take(three, ballot(three, "yes"), 1.2).reason == "not asked"
    assert tally.take(one, ballot(one, "yes"), 1.5).kind == "counted"
    assert tally.take(one, ballot(one, "no"), 1.6).reason.startswith("duplicate")
    assert tally.take(one, [1, 2], 1.6).kind == "rejected"
    assert tally.take(one, {"kind": "question"}, 1.6).kind == "ignored"
    assert not tally.complete
    tally.closed_at = 2.0
    late = tally.take(two, ballot(two, "no"), 2.25)
    assert late.kind == "late" and late.reason == "0.25 s late"
    assert tally.counts == {"yes": 1, "no": 0} and tally.winners == ["yes"]
    assert len(tally.rejected) == 6 and len(tally.late) == 1
    assert tally.silent == []  # each asked voter was counted, late or rejected


def test_the_tally_knows_each_voter_by_its_sender_and_names_the_silent() -> None:
    tally = Tally("v1", ["yes", "no"])
    one, two, three = (f"vote.v1.voter-0{n}" for n in (1, 2, 3))
    tally.register([one, two, three], "local")
    for channel, sender in ((one, 11), (two, 22), (three, 33)):
        tally.take(channel, {"kind": "ready", "voter": channel}, 0.0, sender)
    tally.asked, tally.due = [one, two, three], 1.0

    forged = tally.take(one, {"kind": "ballot", "voter": one, "option": "no"}, 1.1, 99)
    assert forged.kind == "rejected" and forged.voter == "voter-01"
    assert "not by the voter's process" in forged.reason
    assert tally.take(one, {"kind": "ballot", "voter": one, "option": "yes"}, 1.2, 11).kind == (
        "counted"
    )
    again = tally.take(one, {"kind": "ballot", "voter": one, "option": "yes"}, 1.3, 11)
    assert again.kind == "rejected" and again.reason.startswith("duplicate")
    tally.closed_at = 2.0
    assert tally.take(two, {"kind": "ballot", "voter": two, "option": "no"}, 2.5, 22).kind == (
        "late"
    )
    late_again = tally.take(two, {"kind": "ballot", "voter": two, "option": "no"}, 2.6, 22)
    assert late_again.reason.startswith("duplicate")
    assert tally.ballots == {one: "yes"}
    assert tally.silent == [three]
