"""``shellbot-bus`` on nats:// addresses, in subprocesses, against nats-servers of the test's own.

The helpers are those of ``test_cli``; each wait is bounded and follows a line
the command prints once it is ready (the spy's banner, the host's invitation).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from _nats import NatsCluster, NatsNode, make_certificates, tls_config
from test_cli import ENV, Background, chart, run

USERS = "authorization { user: a, password: b }"


@pytest.fixture
def background() -> Iterator[Callable[..., Background]]:
    """Starts commands in the background and kills those still running after the test."""
    started: list[Background] = []

    def start(*args: str) -> Background:
        command = Background(*args)
        started.append(command)
        return command

    yield start
    for command in started:
        command.stop()


def with_credentials(url: str, credentials: str) -> str:
    return url.replace("nats://", f"nats://{credentials}", 1)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("shellbot-bus: error:"), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_help_names_nats_addresses() -> None:
    for command in ("vote", "hub", "spy", "publish"):
        assert "nats://" in run(command, "--help").stdout, command
    assert "NATS server is the hub" in run("hub", "--help").stdout


@pytest.mark.parametrize(
    "address",
    ["nats://", "nats://127.0.0.1:99999", "nats://127.0.0.1:4222,tcp://127.0.0.1:1"],
)
def test_an_invalid_nats_address_gets_one_line_and_exit_2(address: str) -> None:
    for command in (["spy"], ["publish", "news", "1"], ["vote"], ["hub"]):
        result = run(*command, "--address", address)
        assert result.returncode == 2, (command, result.stderr)
        assert address in one_error_line(result.stderr)
    joined = run("vote", "--join", address)
    assert joined.returncode == 2
    assert one_error_line(joined.stderr).startswith("shellbot-bus: error: --join ")


def test_an_invalid_address_keeps_its_password_to_itself() -> None:
    result = run("spy", "--address", "nats://a:s3cret@127.0.0.1:1,nats://h:x")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "s3cret" not in line and "nats://a:***@127.0.0.1:1" in line


def test_spy_and_publish_with_credentials_in_the_address(
    servers: Callable[..., NatsNode], background: Callable[..., Background]
) -> None:
    node = servers(USERS)
    address = with_credentials(node.url, "a:b@")
    news = background("spy", "news", "--json", "--count", "3", "--address", address)
    banner = news.wait_for("Spying on")
    assert "nats://a:***@127.0.0.1:" in banner  # the password is not shown
    # The server is the hub: the spy starts no publisher process to keep one up, whose
    # connection the server would count.
    assert node.connections() == 1
    everything = background("spy", "--count", "4", "--address", address)
    everything.wait_for("Spying on")

    assert run("publish", "weather", '"rain"', "--address", address).returncode == 0
    one = run("publish", "news", '{"title": "hello"}', "--address", address)
    assert one.returncode == 0, one.stderr
    assert one.stderr.strip().startswith("Published 1 message on 'news' at nats://a:***@")
    piped = run("publish", "news", "--address", address, stdin='1\n\n["two", 2]\n')
    assert piped.returncode == 0, piped.stderr
    assert "Published 2 messages" in piped.stderr

    code, output = news.finish()
    assert code == 0, output
    records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [record["message"] for record in records] == [{"title": "hello"}, 1, ["two", 2]]
    assert all(isinstance(record["sender"], int) and record["sequence"] for record in records)
    code, output = everything.finish()
    assert code == 0, output
    lines = [line for line in output.splitlines() if re.match(r"\d\d:\d\d:\d\d", line)]
    assert [line.split(" ", 1)[1] for line in lines] == [
        'weather "rain"',
        'news {"title":"hello"}',
        "news 1",
        'news ["two",2]',
    ]
    assert ":b@" not in output


def test_spy_and_publish_on_a_cluster_address(
    tmp_path: Path, background: Callable[..., Background]
) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    try:
        cluster.start()
        spy = background("spy", "--json", "--count", "3", "--address", cluster.address)
        spy.wait_for("Spying on")  # its subscription is live on every node
        for node in cluster.nodes:  # each publish goes through one node only
            result = run("publish", "news", f'"{node.name}"', "--address", node.url)
            assert result.returncode == 0, result.stderr
        code, output = spy.finish()
        assert code == 0, output
        records = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert [record["message"] for record in records] == ["n1", "n2", "n3"]
    finally:
        cluster.stop()


def test_hub_on_a_nats_address_says_the_server_is_the_hub() -> None:
    started = time.monotonic()
    result = run("hub", "--address", "nats://127.0.0.1:1")  # no server needed to tell
    assert time.monotonic() - started < 5.0
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "nats://127.0.0.1:1 needs no hub: a NATS server is the hub" in line


def test_vote_over_nats_with_voters_in_worker_processes(
    servers: Callable[..., NatsNode],
) -> None:
    address = servers().url
    args = ["vote", "--voters", "6", "--workers", "2", "--think", "0.5", "--seed", "11"]
    result = run(*args, "--address", address)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"on {address} (a NATS server is the hub)" in result.stdout
    assert "6 voters in 2 worker processes" in result.stdout
    assert "Participation: 6 of 6 voters (100%)" in result.stdout
    assert "Late ballots: none  Rejected ballots: none  Silent voters: none" in result.stdout
    counts = chart(result.stdout)
    assert sum(counts.values()) == 6
    again = run(*args, "--address", address)  # the seed decides, whatever the transport
    assert again.returncode == 0, again.stdout + again.stderr
    assert chart(again.stdout) == counts


def test_voters_join_a_vote_over_nats_from_another_process(
    servers: Callable[..., NatsNode], background: Callable[..., Background]
) -> None:
    address = with_credentials(servers(USERS).url, "a:b@")
    host = background(
        "vote", "--voters", "2", "--think", "0.5", "--wait", "20", "--expect", "3",
        "--seed", "4", "--address", address,
    )  # fmt: skip
    hint = host.wait_for("Waiting up to 20 s")
    assert "shellbot-bus vote --join nats://a:***@127.0.0.1:" in hint
    joiner = run("vote", "--join", address, "--voters", "3")
    assert joiner.returncode == 0, joiner.stdout + joiner.stderr
    assert "3 voters (voter-03..voter-05)" in joiner.stdout
    assert len(re.findall(r"voter-0[345] voted", joiner.stdout)) == 3

    code, output = host.finish()
    assert code == 0, output
    assert "3 voters joined" in output
    assert "Joined: 3 of 3 expected voters" in output
    assert "Participation: 5 of 5 voters (100%)" in output
    assert sum(chart(output).values()) == 5


@pytest.mark.parametrize(
    "command",
    [["spy"], ["publish", "news", "1"], ["vote", "--voters", "2"], ["vote", "--join"]],
    ids=["spy", "publish", "vote", "join"],
)
@pytest.mark.parametrize("credentials", ["a:wrong@", ""], ids=["wrong", "none"])
def test_refused_credentials_get_one_line_and_exit_1(
    servers: Callable[..., NatsNode], command: list[str], credentials: str
) -> None:
    address = with_credentials(servers(USERS).url, credentials)
    args = [*command, address] if command[-1] == "--join" else [*command, "--address", address]
    started = time.monotonic()
    result = run(*args)
    assert time.monotonic() - started < 8.0  # well before bus.start_timeout (10 s)
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_error_line(result.stderr)
    said = "refused this program's credentials" if credentials else "requires credentials"
    assert said in line and "authorization violation" in line
    assert "wrong" not in line


def test_tls_files_come_from_the_environment(
    servers: Callable[..., NatsNode], tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificates")
    certificates = make_certificates(tmp_path)
    address = servers(tls_config(certificates, verify=True)).url
    env = {
        **ENV,
        "SHELLBOT_BUS_NATS_TLS_CA": str(certificates / "ca.pem"),
        "SHELLBOT_BUS_NATS_TLS_CERT": str(certificates / "client.pem"),
        "SHELLBOT_BUS_NATS_TLS_KEY": str(certificates / "client.key"),
    }
    # The host and the voters in its worker processes all speak TLS with a certificate.
    voted = run("vote", "--voters", "3", "--think", "0.2", "--address", address, env=env)
    assert voted.returncode == 0, voted.stdout + voted.stderr
    assert "Participation: 3 of 3 voters (100%)" in voted.stdout

    untrusting = run("publish", "news", "1", "--address", address)
    assert untrusting.returncode == 1
    assert "does not trust" in one_error_line(untrusting.stderr)
    anonymous = {**env, "SHELLBOT_BUS_NATS_TLS_CERT": "", "SHELLBOT_BUS_NATS_TLS_KEY": ""}
    result = run("spy", "--address", address, env=anonymous)
    assert result.returncode == 1
    assert "asks for a TLS client certificate" in one_error_line(result.stderr)
    missing = {**env, "SHELLBOT_BUS_NATS_TLS_CA": str(tmp_path / "nowhere.pem")}
    result = run("spy", "--address", address, env=missing)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "bus.nats.tls_ca names" in line and "SHELLBOT_BUS_NATS_*" in line
