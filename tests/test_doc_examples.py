"""Every example of the documentation is a file of docs/examples/, included into its
page, and run here by name on a real bus: its own process, a free port instead of
the 5555 it shows (``BUS_ADDRESS``), a nats-server of the test's own where it needs one
(``NATS_ADDRESS``). Each run's output is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from _nats import NatsNode

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
RUN_HERE = {  # each example, by name, and the test that runs it
    "quickstart.py": "test_quickstart",
    "patterns.py": "test_patterns",
    "workers.py": "test_workers",
    "requests.py": "test_requests",
    "on_nats.py": "test_on_nats",
    "durable.py": "test_durable",
    "test_my_bot.py": "test_my_bot",
    "vote.console": "test_vote_transcript",
}


def run_example(name: str, timeout: float = 90.0, **environment: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **environment},
        cwd=EXAMPLES,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_quickstart(tcp_address: str) -> None:
    output = run_example("quickstart.py", BUS_ADDRESS=tcp_address)
    assert output.splitlines() == [
        "{'question': 'lunch?', 'options': ['pizza', 'sushi']}",
        "direct-2",
        "None",
    ]


def test_patterns(tcp_address: str) -> None:
    output = run_example("patterns.py", BUS_ADDRESS=tcp_address)
    assert output.splitlines() == [
        "bot-1 was asked: {'question': 'lunch?'}",
        "the group heard: {'ballot': 'pizza'}",  # not the group's own instruction
        "and nothing else: None",
    ]


def test_workers(tcp_address: str) -> None:
    output = run_example("workers.py", BUS_ADDRESS=tcp_address)
    assert output.splitlines() == ["resized: 30 images, each once: True", "lost: 0"]


def test_requests(tcp_address: str) -> None:
    output = run_example("requests.py", BUS_ADDRESS=tcp_address)
    assert output.splitlines() == ["answer: 42 answers: [8]", "nobody: NoResponders"]


def test_on_nats(nats_server: NatsNode) -> None:
    output = run_example("on_nats.py", NATS_ADDRESS=nats_server.url)
    assert output.splitlines() == ["holds a hub: False", "votes.alice pizza"]


def test_durable(jetstream: NatsNode) -> None:
    output = run_example("durable.py", NATS_ADDRESS=jetstream.url)
    lines = output.splitlines()
    assert lines[0] == "stored: True"
    assert "'stored': 1" in lines[1] and "'not_stored': 0" in lines[1]
    assert lines[2] == "ballot: {'voter': 'alice', 'choice': 'pizza'}"


def test_my_bot(tmp_path: Path) -> None:
    """The testing page's example is a user's test file: pytest runs it, with the
    plugin the installed package registers."""
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLES / "test_my_bot.py"), "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), f"--basetemp={tmp_path / 't'}"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "4 passed" in completed.stdout


def test_every_example_is_run_here_by_name() -> None:
    files = {path.name for path in EXAMPLES.iterdir() if path.suffix in (".py", ".console")}
    assert files == set(RUN_HERE)
    for test in RUN_HERE.values():
        assert callable(globals()[test])


def test_every_example_is_in_a_page_and_every_page_example_is_a_file() -> None:
    pages = [p for p in DOCS.rglob("*.md") if p.name not in ("design.md", "benchmark.md")]
    included: set[str] = set()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        included |= set(re.findall(r'--8<-- "([^"]+)"', text))
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            assert block.strip().startswith('--8<-- "'), f"{page}: an example not in a file"
    assert included >= set(RUN_HERE)


def test_vote_transcript(tcp_address: str) -> None:
    """The vote's transcript is what a run with its seed prints, but for what differs
    from run to run: the vote's id, the address, the clock and how long voters took."""
    transcript = (EXAMPLES / "vote.console").read_text(encoding="utf-8").splitlines()
    command = transcript[0].removeprefix("$ ").split()
    assert command[:2] == ["shellbot-bus", "vote"]
    completed = subprocess.run(
        [sys.executable, "-m", "shellbot.cli", *command[1:], "--address", tcp_address],
        capture_output=True,
        text=True,
        timeout=120,
    )  # the command of this Python's installation: shellbot-bus
    assert completed.returncode == 0, completed.stderr

    def varying(line: str) -> str:
        line = re.sub(r"Vote [0-9a-f]{6} on \S+", "Vote ID on ADDRESS", line)
        line = re.sub(r"\d\d:\d\d:\d\d\.\d{3}", "TIME", line)
        return re.sub(r"ready after \d+\.\d\d s", "ready after SECONDS", line)

    assert [varying(line) for line in completed.stdout.splitlines()] == [
        varying(line) for line in transcript[1:]
    ]
