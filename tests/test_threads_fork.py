"""Threads and fork: put() from many threads at once; a forked process on its own."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest
from conftest import Subscribers

from shellbot import Context, _process
from shellbot import context as context_module
from shellbot.bus import Bus, Publisher, Subscriber

THREADS = 8
PER_THREAD = 1_000


def test_eight_threads_put_at_once(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    subscriber = subscribers(bus, ["shared", "own-3"])
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def put_many(thread: int) -> None:
        try:
            start.wait(5.0)
            for index in range(PER_THREAD):
                publisher.put("shared", [thread, index])
                if index % 100 == 0:
                    publisher.put(f"own-{thread}", index)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=put_many, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    assert not errors
    expected = THREADS * PER_THREAD + PER_THREAD // 100
    received = [subscriber.receive(block=True, timeout=5.0) for _ in range(expected)]
    assert subscriber.get() is None
    shared = [m for m in received if m is not None and m.channel == "shared"]
    own = [m.message for m in received if m is not None and m.channel == "own-3"]
    assert len(shared) == THREADS * PER_THREAD  # nothing lost
    pairs = [tuple(m.message) for m in shared]
    assert len(set(pairs)) == len(pairs)  # nothing duplicated
    for thread in range(THREADS):  # order kept per thread
        assert [index for n, index in pairs if n == thread] == list(range(PER_THREAD))
    assert own == list(range(0, PER_THREAD, 100))
    # One process, one sender: sequence numbers per channel are gapless.
    assert [m.sequence for m in shared] == list(range(1, len(shared) + 1))
    assert subscriber.stats["missed"] == 0


def child_round_trip(bus: Bus, process_local: bool) -> dict[str, Any]:
    """In the forked child: subscribe and publish with nothing but the bus."""
    own = None
    if process_local:  # the parent's hub or exchange is not in this process
        own = bus.publish()
        own.start()
    subscriber = bus.subscribe("child")
    assert subscriber.wait_ready(timeout=5.0), "the child's subscriber never got ready"
    publisher = bus.publish()
    if not process_local:
        publisher.put("to-parent", {"from": os.getpid()})
    # When this comes back through the hub, what was put before it has left too.
    publisher.put("child", {"echo": os.getpid()})
    echo = subscriber.receive(block=True, timeout=5.0)
    subscriber.close()
    if own is not None:
        assert own.stop(timeout=5.0)
    assert echo is not None, "the child's message never came back"
    return {"pid": os.getpid(), "channel": echo.channel, "message": echo.message}


def use_the_bus_first(bus: Bus, publisher: Publisher, subscribers: Subscribers) -> Subscriber:
    """The parent uses the bus before forking: sockets, outbox and threads exist."""
    subscriber = subscribers(bus, ["to-parent", "parent"])
    publisher.put("parent", "before the fork")
    assert subscriber.get(block=True, timeout=5.0) == "before the fork"
    return subscriber


def check_the_parent_after(
    bus: Bus, publisher: Publisher, subscriber: Subscriber, child: int, process_local: bool
) -> None:
    if not process_local:
        message = subscriber.receive(block=True, timeout=5.0)
        assert message is not None and message.channel == "to-parent"
        assert message.message == {"from": child}
    publisher.put("parent", "after the fork")
    assert subscriber.get(block=True, timeout=5.0) == "after the fork"


def run_in_fork(conn: Any, bus: Bus, process_local: bool) -> None:
    try:
        conn.send(("ok", child_round_trip(bus, process_local)))
    except BaseException as error:
        conn.send(("error", repr(error)))
    finally:
        conn.close()


def test_a_process_forked_by_multiprocessing_works_on_its_own(
    bus: Bus, publisher: Publisher, address: str, subscribers: Subscribers
) -> None:
    process_local = address.startswith(("inproc://", "memory://"))
    subscriber = use_the_bus_first(bus, publisher, subscribers)
    fork = multiprocessing.get_context("fork")
    parent_end, child_end = fork.Pipe()
    child = fork.Process(target=run_in_fork, args=(child_end, bus, process_local))
    child.start()
    try:
        assert parent_end.poll(20.0), "the child did not report"
        status, result = parent_end.recv()
        assert status == "ok", result
    finally:
        child.join(10.0)
        if child.is_alive():  # pragma: no cover - only when the test failed
            child.kill()
    assert child.exitcode == 0
    assert result["pid"] == child.pid
    assert (result["channel"], result["message"]) == ("child", {"echo": child.pid})
    check_the_parent_after(bus, publisher, subscriber, result["pid"], process_local)


@pytest.mark.parametrize("address", ["tcp", "memory"], indirect=True)
def test_a_process_forked_by_os_fork_works_on_its_own(
    bus: Bus, publisher: Publisher, address: str, subscribers: Subscribers
) -> None:
    """A bare os.fork(). The child shares its parent's connection to the context's
    manager (nothing resets it after a bare fork): the parent leaves the context
    alone until the child is done."""
    process_local = address.startswith("memory://")
    subscriber = use_the_bus_first(bus, publisher, subscribers)
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(reading)
            result = child_round_trip(bus, process_local)
            os.write(writing, repr(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writing)
    try:
        with os.fdopen(reading, "rb") as pipe:
            report = pipe.read()  # ends when the child exits, bounded by its own waits
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report == repr({"pid": pid, "channel": "child", "message": {"echo": pid}}).encode()
    check_the_parent_after(bus, publisher, subscriber, pid, process_local)


def test_a_lock_held_by_a_thread_of_the_parent_is_free_in_a_forked_child() -> None:
    """The lock under which a context starts its manager, held by another thread of the
    parent at the fork (as while it starts one): the child makes its own manager."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with context_module._manager_lock:
            holding.set()
            release.wait(30.0)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5.0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                code = 0 if Context({"fork": {"made": "here"}}).get("fork.made") == "here" else 2
            finally:
                os._exit(code)
        assert exit_code_of(pid, timeout=20.0) == 0
    finally:
        release.set()
        holder.join(5.0)


def exit_code_of(pid: int, timeout: float) -> int:
    """The exit code of a forked child; one stuck past ``timeout`` is killed first."""
    deadline = time.monotonic() + timeout
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if ended[0] == 0:
        os.kill(pid, signal.SIGKILL)
        ended = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(ended[1])


def test_every_after_fork_reset_runs_in_the_child_though_one_fails() -> None:
    ran: list[str] = []

    def failing() -> None:
        raise RuntimeError("a reset that fails (as this test wants)")

    def after() -> None:
        ran.append("after")

    _process.after_fork(failing)
    _process.after_fork(after)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(0 if ran == ["after"] else 1)
    finally:
        _process._resets.remove(failing)
        _process._resets.remove(after)
    assert exit_code_of(pid, timeout=10.0) == 0
    assert ran == []  # the parent ran none


def test_an_origin_is_current_in_its_maker_only() -> None:
    made_here = _process.Origin()
    assert made_here.is_current()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        made_in_child = _process.Origin()
        os._exit(0 if not made_here.is_current() and made_in_child.is_current() else 1)
    assert exit_code_of(pid, timeout=10.0) == 0
    assert made_here.is_current()
