"""``shellbot-bus request`` and ``reply`` between processes, and what ``spy`` shows of them."""

from __future__ import annotations

import signal
import sys

import orjson
from test_cli import background, run  # noqa: F401 - background is a fixture

ECHO = f"{sys.executable} -c 'import sys; print(sys.stdin.read().upper())'"


def test_request_and_reply_between_processes(network_address: str, background) -> None:  # noqa: F811
    address = ("--address", network_address)
    nobody = run("request", "double", "1", *address)
    assert nobody.returncode == 1
    assert (
        nobody.stderr.count("\n") == 1 and "No one subscribes to channel 'double'" in nobody.stderr
    )

    fixed = background("reply", "double", "--json", '{"twice": true}', *address)
    fixed.wait_for("Answering requests on 'double'")
    echo = background("reply", "shout", "--command", ECHO, *address)
    echo.wait_for("Answering requests on 'shout'")
    spy = background("spy", "double", "quiet", "--json", *address)
    spy.wait_for("Spying on")

    answered = run("request", "double", "21", *address)
    assert answered.returncode == 0, answered.stderr
    assert [orjson.loads(line) for line in answered.stdout.splitlines()] == [{"twice": True}]
    every = run("request", "double", "2", "--all", "--count", "1", "--timeout", "20", *address)
    assert every.returncode == 0, every.stderr
    (line,) = [orjson.loads(line) for line in every.stdout.splitlines()]
    assert line["message"] == {"twice": True} and isinstance(line["sender"], int)
    shouted = run("request", "shout", '{"a": true}', "--timeout", "20", *address)
    assert shouted.returncode == 0, shouted.stderr
    assert orjson.loads(shouted.stdout) == '{"A":TRUE}'  # not JSON once upper-cased: a string

    silent = run("request", "quiet", "1", "--timeout", "0.5", *address)  # the spy never answers
    assert silent.returncode == 1
    assert "No answer to the request on channel 'quiet' within 0.5 s" in silent.stderr

    fixed.process.send_signal(signal.SIGINT)
    code, output = fixed.finish()
    assert code == 0 and "Answered 2 requests on 'double'" in output
    spy.process.send_signal(signal.SIGINT)
    code, output = spy.finish()
    records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    kinds = [(record.get("kind"), record["message"]) for record in records]
    assert ("request", 21) in kinds and ("request", 1) in kinds
    assert ("answer", {"twice": True}) in kinds


def test_reply_needs_one_answer_and_request_a_json_message(tcp_address: str) -> None:
    for args in (["reply", "x"], ["reply", "x", "--json", "1", "--command", "cat"]):
        result = run(*args, "--address", tcp_address)
        assert result.returncode == 2 and "--json JSON or --command CMD" in result.stderr
    result = run("request", "x", "not json", "--address", tcp_address)
    assert result.returncode == 3 and "MESSAGE is not JSON" in result.stderr
    result = run("request", "x", "1", "--count", "2", "--address", tcp_address)
    assert result.returncode == 2 and "--count goes with --all" in result.stderr


def test_request_and_reply_have_help_with_examples_and_exit_codes() -> None:
    for command in ("request", "reply"):
        result = run(command, "--help")
        assert result.returncode == 0
        assert f"shellbot-bus {command} " in result.stdout and "Exit codes" in result.stdout


def test_replies_in_a_group_answer_each_request_once(network_address: str, background) -> None:  # noqa: F811
    address = ("--address", network_address)
    members = [
        background("reply", "resize", "--group", "workers", "--json", str(n), *address)
        for n in range(2)
    ]
    for member in members:
        member.wait_for("as a member of 'workers'")
    for _ in range(4):
        every = run("request", "resize", "1", "--all", "--timeout", "1", *address)
        assert every.returncode == 0, every.stderr
        assert len(every.stdout.splitlines()) == 1  # one member answered
    answered = 0
    for member in members:
        member.process.send_signal(signal.SIGINT)
        code, output = member.finish()
        assert code == 0
        answered += int(output.split("Answered ", 1)[1].split(" ", 1)[0])
    assert answered == 4
