"""Context: dotted settings shared by the processes of a program."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from shellbot import Context


def add_many(context: Context, times: int) -> None:
    for _ in range(times):
        context.increment("votes.count")


def add_to_gauge(context: Context, times: int) -> None:
    for _ in range(times):
        context.increment("votes.gauge")


def bracketed(value: Any, default: Any) -> Any:
    """A filter that can travel to another process, being defined at module level."""
    return f"[{value}|{default}]"


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
    # A plain prefix, as the original's has(): 'bu' starts 'bus.address'.
    assert context.has("bu") and not context.has("nothing") and not context.has(".address")


def test_set_clear_and_is_empty() -> None:
    context = Context()
    assert context.is_empty is True  # a property, as in the original: `if context.is_empty:`
    assert not context.is_switched_off()
    context.set("general.switch", "off")
    assert context.is_switched_off()
    assert context.is_empty is False
    assert context.get("general.switch") == "off"
    context.clear()
    assert context.is_empty is True
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


def test_check_follows_the_original() -> None:
    context = Context({"server": {"port": None, "name": "bot"}})
    # Missing, no default, not mandatory: reads None, nothing checked, no error.
    context.check("server.url")
    context.check("server.url", filter=True)  # filter alone does not make it mandatory
    assert context.get("server.url") is None
    assert not context.has("server.url")
    # A default is stored for a key missing or None, even when the key is mandatory.
    context.check("server.host", "localhost", is_mandatory=True)
    context.check("server.port", 8080, is_mandatory=True)
    assert (context.get("server.host"), context.get("server.port")) == ("localhost", 8080)
    # Only validate(value) is False refuses: a validator that returns None accepts.
    context.check("server.name", validate=lambda value: None)
    with pytest.raises(ValueError, match=r"server\.name"):
        context.check("server.name", validate=lambda value: value == "other")
    assert context.get("server.name") == "bot"


def test_context_takes_a_filter_for_check(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, Any]] = []

    def upper(value: Any, default: Any) -> Any:
        seen.append((value, default))
        return value.upper()

    context = Context({"server": {"token": "$TOKEN", "name": "bot"}}, filter=upper)
    context.check("server.token", filter=True)
    context.check("server.room", "lobby", filter=True)
    context.check("server.name")  # no filter asked
    assert seen == [("$TOKEN", None), ("lobby", "lobby")]
    assert context.get("server.token") == "$TOKEN".upper()
    assert context.get("server.room") == "LOBBY"
    assert context.get("server.name") == "bot"
    # The default filter falls back on the default when the variable is not set.
    monkeypatch.delenv("SHELLBOT_TEST_ABSENT", raising=False)
    plain = Context({"server": {"token": "$SHELLBOT_TEST_ABSENT"}})
    plain.check("server.token", "fallback", filter=True)
    assert plain.get("server.token") == "fallback"


def test_a_filter_travels_with_its_context_when_it_can() -> None:
    # The originals stay alive: their shared dicts live as long as they do.
    original = Context({"a": {"b": "x"}}, filter=bracketed)
    travelled = pickle.loads(pickle.dumps(original))
    travelled.check("a.b", filter=True)
    assert original.get("a.b") == "[x|None]"
    # A lambda cannot be pickled: the context still travels (to a spawned publisher),
    # and a check that would need the filter there says why it is missing.
    with_lambda = Context({"a": {"b": "x"}}, filter=lambda value, default: value)
    lost = pickle.loads(pickle.dumps(with_lambda))
    assert lost.get("a.b") == "x"
    with pytest.raises(TypeError, match="module level"):
        lost.check("a.b", filter=True)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers, root.level = handlers, level


def test_set_logger_sets_up_the_root_logger(root_logger: logging.Logger) -> None:
    root_logger.setLevel(logging.WARNING)
    Context.set_logger()
    assert root_logger.level == logging.DEBUG
    assert len(root_logger.handlers) == 1
    formatter = root_logger.handlers[0].formatter
    assert formatter is not None
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert formatter.format(record).endswith("INFO     hello")
    Context.set_logger(level=logging.INFO)
    assert root_logger.level == logging.INFO
    assert len(root_logger.handlers) == 1  # replaced, not added


def test_check_filters_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELLBOT_TEST_TOKEN", "secret")
    monkeypatch.delenv("SHELLBOT_TEST_ABSENT", raising=False)
    context = Context(
        {"server": {"token": "$SHELLBOT_TEST_TOKEN", "other": "$SHELLBOT_TEST_ABSENT"}}
    )
    context.check("server.token", filter=True)
    assert context.get("server.token") == "secret"
    context.check("server.other", filter=True)
    assert context.get("server.other") is None  # never the placeholder '$SHELLBOT_TEST_ABSENT'
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


def test_a_counter_that_is_not_a_number_starts_from_zero() -> None:
    context = Context({"votes": {"gauge": "world", "other": [1], "half": 1.5}})
    assert context.increment("votes.gauge") == 1  # as in the original
    context.set("votes.gauge", "world")
    assert context.decrement("votes.gauge", 2) == -2
    assert context.increment("votes.other", 3) == 3
    assert context.increment("votes.half") == 1  # not an integer: from 0, as the original
    # Still atomic across processes: each one's first increment may find the string.
    context.set("votes.gauge", "world")
    workers = [
        multiprocessing.get_context("fork").Process(target=add_to_gauge, args=(context, 50))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30.0)
        assert worker.exitcode == 0
    assert context.get("votes.gauge") == 150


KILLED_PROGRAM = """
import multiprocessing, multiprocessing.util, sys
from shellbot import Context

if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    context = Context({"a": {"b": 1}})
    print(multiprocessing.util.get_temp_dir(), flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_killed_program_leaves_no_temporary_folder(method: str, tmp_path: Path) -> None:
    """multiprocessing's pymp-* folder of a program killed by SIGKILL is removed by the
    context's manager, which outlives it by a moment."""
    script = tmp_path / "program.py"
    script.write_text(
        KILLED_PROGRAM.replace(
            "import multiprocessing.util, sys",
            "import multiprocessing, "
            f"multiprocessing.util, sys\nmultiprocessing.set_start_method({method!r})",
        )
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    program = subprocess.Popen(
        [sys.executable, str(script), method],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        assert program.stdout is not None
        folder = Path(program.stdout.readline().strip())
        assert folder.is_dir() and folder.parent == temp
        program.kill()
        program.wait(10)
        deadline = time.monotonic() + 10.0
        while list(temp.glob("pymp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list(temp.glob("pymp-*"))
    finally:
        if program.poll() is None:
            program.kill()
            program.wait(5)


def test_a_forked_child_with_a_context_of_its_own_leaves_its_parents_folder() -> None:
    """A child made by os.fork() uses its parent's multiprocessing folder: the child's own
    manager, ending with the child, must not take it away from the parent."""
    import multiprocessing.util

    Context({"a": {"b": 1}})  # the parent's manager, and its folder
    folder = Path(multiprocessing.util.get_temp_dir())
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if Context({"c": {"d": 2}}).get("c.d") == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(3 * 0.25)  # the child's manager looks every 0.25 s whether the child lives
    assert folder.is_dir()
    assert Context({"e": {"f": 3}}).get("e.f") == 3
