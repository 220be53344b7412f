"""Context: dotted settings shared by the processes of a program."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shellbot import Context


def add_many(context: Context, times: int) -> None:
    for _ in range(times):
        context.increment("votes.count")


def test_nested_settings_become_dotted_keys() -> None:
    context = Context({"bus": {"address": "tcp://127.0.0.1:6000", "tuning": {"linger": 1}}})
    assert context.get("bus.address") == "tcp://127.0.0.1:6000"
    assert context.get("bus.tuning.linger") == 1
    assert context.get("bus") == {"address": "tcp://127.0.0.1:6000", "tuning.linger": 1}
    assert context.get("missing") is None
    assert context.get("missing", "default") == "default"
    context.apply({"bus": {"address": "ipc:///tmp/x"}, "general": {"switch": "on"}})
    assert context.get("bus.address") == "ipc:///tmp/x"
    assert context.get("bus.tuning.linger") == 1
    assert context.has("bus") and context.has("bus.tuning") and context.has("general.switch")
    assert not context.has("bu") and not context.has("nothing")


def test_set_clear_and_is_empty() -> None:
    context = Context()
    assert context.is_empty()
    assert not context.is_switched_off()
    context.set("general.switch", "off")
    assert context.is_switched_off()
    assert not context.is_empty()
    assert context.get("general.switch") == "off"
    context.clear()
    assert context.is_empty()
    assert context.get("general.switch") is None


def test_check_defaults_mandatory_validate() -> None:
    context = Context({"bus": {"address": "tcp://127.0.0.1:7000"}})
    context.check("bus.address", "tcp://127.0.0.1:5555")
    assert context.get("bus.address") == "tcp://127.0.0.1:7000"  # a set value stays
    context.check("bus.linger", 2.0)
    assert context.get("bus.linger") == 2.0
    with pytest.raises(KeyError, match=r"server\.url"):
        context.check("server.url", is_mandatory=True)
    with pytest.raises(ValueError, match=r"bus\.address"):
        context.check("bus.address", validate=lambda value: value.startswith("ipc://"))
    context.check("bus.address", validate=lambda value: value.startswith("tcp://"))


def test_check_filters_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELLBOT_TEST_TOKEN", "secret")
    monkeypatch.delenv("SHELLBOT_TEST_ABSENT", raising=False)
    context = Context(
        {"server": {"token": "$SHELLBOT_TEST_TOKEN", "other": "$SHELLBOT_TEST_ABSENT"}}
    )
    context.check("server.token", filter=True)
    assert context.get("server.token") == "secret"
    with pytest.raises(KeyError, match="SHELLBOT_TEST_ABSENT"):
        context.check("server.other", filter=True)
    context.check("server.plain", "$SHELLBOT_TEST_TOKEN")
    assert context.get("server.plain") == "$SHELLBOT_TEST_TOKEN"  # no filter asked


def test_counters_are_atomic_across_processes() -> None:
    context = Context()
    assert context.increment("votes.count") == 1
    assert context.decrement("votes.count") == 0
    assert context.increment("votes.count", 5) == 5
    workers = [
        multiprocessing.get_context(method).Process(target=add_many, args=(context, 100))
        for method in ("fork", "spawn", "fork")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30.0)
        assert worker.exitcode == 0
    assert context.get("votes.count") == 305


# A program that makes a Context and a publisher, and a child of the start method
# that reads the context a while later (the manager serves it after its first look
# at its parent); then it waits for a line, and fails if that line is 'raise'.
PROGRAM = """
import multiprocessing, sys, time
from shellbot import Context
from shellbot.bus import Bus


def read(context):
    time.sleep(0.5)
    context.set("shared.seen", context.get("shared.value") + 1)


if __name__ == "__main__":
    method, address = sys.argv[1:3]
    multiprocessing.set_start_method(method)
    context = Context({"bus": {"address": address}, "shared": {"value": 41}})
    publisher = Bus(context).publish()
    publisher.start()
    reader = multiprocessing.Process(target=read, args=(context,))
    reader.start()
    reader.join(30)
    print("ready", context.get("shared.seen"), flush=True)
    if sys.stdin.readline().strip() == "raise":
        raise RuntimeError("the program fails")
"""


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize(
    ("method", "ending"),
    [
        ("fork", "SIGTERM"),
        ("fork", "SIGKILL"),
        ("fork", "exception"),
        ("spawn", "SIGKILL"),
        ("forkserver", "SIGTERM"),
    ],
)
def test_a_program_that_ends_leaves_no_process_behind(
    method: str, ending: str, tcp_address: str, tmp_path: Path
) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    program = subprocess.Popen(
        [sys.executable, str(script), method, tcp_address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children: list[psutil.Process] = []
    try:
        assert program.stdout is not None and program.stdin is not None
        assert program.stdout.readline().split() == ["ready", "42"]
        children = psutil.Process(program.pid).children(recursive=True)
        assert len(children) >= 2  # at least the context's manager and the publisher
        if ending == "exception":
            program.stdin.write("raise\n")
            program.stdin.flush()
        else:
            program.send_signal(getattr(signal, ending))
        program.wait(20)
        deadline = time.monotonic() + 5.0
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _alive(children)
        assert not left, [(process.pid, process.cmdline()) for process in left]
    finally:
        if program.poll() is None:
            program.kill()
            program.wait(5)
        for process in _alive(children):
            process.kill()
