"""One run: the mode's servers, the workload, the schedule played in real time, a calm
end, then the checker on what the processes wrote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import checker, schedule
from .infrastructure import Infrastructure
from .processes import Program, listener_of, wait_lines
from .schedule import Fault, Shape

CALM = 2.0  # seconds of traffic without faults at the end: what a gap hides shows then
QUIET = 2.0  # a subscriber ends once told and nothing came for that long
SEND_TIMEOUT = 5.0  # the workload's bus.send_timeout
GROUP = "faults-workers"  # queue mode: the group every subscriber past the witnesses joins
HOLD = SEND_TIMEOUT + 5.0  # how long a durable receiver waits for a gap to fill
CATCH_UP = HOLD + 30.0  # how long durable subscribers may take to be handed everything


class Workload:
    """The publishers and subscribers of a run, each program its current life."""

    def __init__(
        self, infrastructure: Infrastructure, shape: Shape, directory: Path, quiet: float = QUIET
    ) -> None:
        self.infrastructure = infrastructure
        self.queue = infrastructure.mode == "queue"
        self.quiet = quiet
        self.shape = shape
        self.directory = directory
        self.channels = [f"faults-{chr(ord('a') + n)}" for n in range(shape.channels)]
        self.programs: dict[str, Program] = {}
        self.lives: Counter[str] = Counter()
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.restarts: list[threading.Thread] = []
        self.starting: set[str] = set()  # targets being started again now
        self.every: list[Program] = []  # every life, to end them all whatever happened
        self.catch_up = 0.0  # seconds durable subscribers took, after the end, to catch up

    def _spec(self, role: str, index: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "address": self.infrastructure.address,
            "durable": self.infrastructure.durable,
            "channels": self.channels,
            "send_timeout": SEND_TIMEOUT,
        }
        if role == "publisher":
            spec.update(name=str(index), rate=self.shape.rate)
        else:
            spec.update(quiet=self.quiet)
            if self.infrastructure.durable:
                spec["durable_name"] = f"faults-{index}"
            if self.queue and index >= self.shape.witnesses:
                spec["group"] = GROUP
        return spec

    def _spawn(self, role: str, index: int) -> Program:
        target = f"{role}:{index}"
        with self.lock:
            life = self.lives[target]
            self.lives[target] += 1
            program = Program(role, index, life, self._spec(role, index), self.directory)
            self.programs[target] = program
            self.every.append(program)
        return program

    def _started(self, program: Program, timeout: float = 40.0) -> None:
        said = program.expect(timeout)
        if said not in ("up", "ready") and not program.killed:
            self.problems.append(f"{program.name} did not start: said {said!r}")

    def launch(self, role: str, index: int) -> Program:
        """A new life of ``role`` ``index``, started; a publisher puts at once."""
        program = self._spawn(role, index)
        self._started(program)
        if role == "publisher" and program.alive:
            program.tell()
        return program

    def start(self) -> None:
        """Every first life, each role's at once (their start-ups overlap); the
        publishers first, since on ZeroMQ one of them holds the hub the subscribers
        need, and they put once the subscribers are ready."""
        for role, count in (
            ("publisher", self.shape.publishers),
            ("subscriber", self.shape.subscribers(self.infrastructure.mode)),
        ):
            programs = [self._spawn(role, index) for index in range(count)]
            deadline = time.monotonic() + 40.0
            for program in programs:
                self._started(program, max(0.1, deadline - time.monotonic()))
        for program in self.of_role("publisher"):
            program.tell()

    def restart_later(self, target: str) -> None:
        role, index = target.split(":")
        self.starting.add(target)

        def restart() -> None:
            try:
                self.launch(role, int(index))
            finally:
                self.starting.discard(target)

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        self.restarts.append(thread)

    def of_role(self, role: str) -> list[Program]:
        return [p for t, p in sorted(self.programs.items()) if t.startswith(role)]

    def end(self) -> None:
        """Halts the publishers, lets the subscribers drain, stops everyone cleanly."""
        for thread in self.restarts:
            thread.join(60.0)
        publishers, subscribers = self.of_role("publisher"), self.of_role("subscriber")
        for program in publishers + subscribers:
            if not program.alive:
                self.problems.append(f"{program.name} was not running at the end")
        for program in publishers:
            program.tell()
        self.problems += wait_lines([p for p in publishers if p.alive], "halted", 30.0)
        for program in publishers:
            program.tell()
        self.problems += wait_lines([p for p in publishers if p.alive], "done", 60.0)
        if self.infrastructure.durable:
            self.catch_up = self._wait_for_durable_delivery()
        for program in subscribers:
            program.tell()
        self.problems += wait_lines([p for p in subscribers if p.alive], "done", self.quiet + 60.0)

    def _wait_for_durable_delivery(self) -> float:
        """Until every durable name was handed what the server acknowledged, or
        CATCH_UP seconds passed; returns how long it took. A durable subscriber may be
        slow to come back after a node's fault, and holds what follows a gap that
        never fills for HOLD seconds (in each publisher's order): late is not lost,
        and how late is a figure."""
        began = time.monotonic()
        while time.monotonic() - began < CATCH_UP:
            report = checker.read_and_check(self.directory, self.shape.witnesses, "durable")
            if not report.figures["acknowledged_lost"]:
                break
            time.sleep(0.5)
        return round(time.monotonic() - began, 1)

    def kill_all(self) -> None:
        for program in self.every:
            program.resume()
            program.kill()


class Player:
    """Plays the faults of a schedule; what undoes each is due ``hold`` seconds later."""

    def __init__(self, workload: Workload, infrastructure: Infrastructure) -> None:
        self.workload = workload
        self.infrastructure = infrastructure
        self.applied: list[dict[str, Any]] = []
        self.began_at = 0.0

    def actions(self, fault: Fault) -> tuple[Callable[[], str], Callable[[], None]]:
        """What starts the fault (returning what it hit) and what undoes it."""
        kind, _, where = fault.target.partition(":")
        infrastructure, workload = self.infrastructure, self.workload
        if kind in ("publisher", "subscriber"):
            if fault.target in workload.starting:  # one life at a time
                return (lambda: "skipped: starting again"), (lambda: None)
            program = workload.programs[fault.target]
            if fault.action == "kill":
                return _saying(program.kill, program.name), (
                    lambda: workload.restart_later(fault.target)
                )
            return _saying(program.stop, program.name), program.resume
        if kind == "hub":
            pid = listener_of(list(workload.programs.values()), infrastructure.hub_port)
            if pid is None:
                return (lambda: "no process holds the hub now"), (lambda: None)
            number = signal.SIGKILL if fault.action == "kill" else signal.SIGSTOP
            return _saying(lambda: signal_pid(pid, number), f"pid {pid}"), (
                lambda: signal_pid(pid, signal.SIGCONT)
            )
        if kind == "node":
            node = int(where)
            if fault.action == "restart":
                return _saying(lambda: infrastructure.kill_node(node), "killed"), (
                    lambda: infrastructure.start_node(node)
                )
            if fault.action == "stop":
                return _saying(lambda: infrastructure.pause_node(node, True), "stopped"), (
                    lambda: infrastructure.pause_node(node, False)
                )
            return _saying(lambda: infrastructure.isolate(node, True), "isolated"), (
                lambda: infrastructure.isolate(node, False)
            )
        a, b = (int(n) for n in where.split("-"))
        return _saying(lambda: infrastructure.set_link(a, b, False), "link down"), (
            lambda: infrastructure.set_link(a, b, True)
        )

    def play(self, faults: list[Fault], duration: float) -> None:
        began = time.monotonic()
        self.began_at = time.time()  # the logs' stats lines say when in this clock
        due: list[tuple[float, int, Fault | None, Callable[[], None] | None]] = [
            (fault.at, number, fault, None) for number, fault in enumerate(faults)
        ]
        number = len(faults)
        while due:
            due.sort(key=lambda entry: (entry[0], entry[1]))
            at, _, fault, undo = due.pop(0)
            if at > duration and undo is not None:
                at = duration  # the end of the faults: everything undone at once
            pause = began + at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if undo is not None:
                undo()
                continue
            assert fault is not None
            start, undo_it = self.actions(fault)
            what = start()
            self.applied.append(
                {**asdict(fault), "started": round(time.monotonic() - began, 3), "did": what}
            )
            number += 1
            due.append((fault.ends, number, None, undo_it))
        pause = began + duration - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def _saying(action: Callable[[], None], what: str) -> Callable[[], str]:
    def act() -> str:
        action()
        return what

    return act


def signal_pid(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def run_once(
    mode: str,
    seed: int,
    duration: float,
    directory: Path,
    shape: Shape | None = None,
    quiet: float = QUIET,
) -> dict[str, Any]:
    """Plays one seeded schedule in ``mode``; returns the result (``ok``, ``violations``,
    ``figures``, the schedule and what was applied)."""
    shape = shape or Shape()
    faults = schedule.make(seed, mode, duration, shape)
    directory.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "duration": duration,
        "replay": f"python -m shellbot.faults --mode {mode} --seed {seed} --duration {duration}"
        f" --faults-per-second {shape.faults_per_second} --rate {shape.rate} --quiet {quiet}",
        "shape": asdict(shape),
        "schedule": schedule.to_json(faults),
    }
    began = time.monotonic()
    with Infrastructure(mode, directory) as infrastructure:
        workload = Workload(infrastructure, shape, directory, quiet)
        player = Player(workload, infrastructure)
        try:
            workload.start()
            if not workload.problems:
                player.play(faults, duration)
            for thread in workload.restarts:
                thread.join(60.0)
            for program in workload.programs.values():
                program.resume()
            workload.problems += infrastructure.heal()
            time.sleep(CALM)
            workload.end()
            for node in infrastructure.nodes:  # what the servers hold at the end, to read
                state = node.monitor("/jsz?streams=true&consumers=true&config=true")
                (directory / f"jsz-{node.name}.json").write_text(json.dumps(state, indent=1))
        finally:
            workload.kill_all()
    report = checker.read_and_check(directory, shape.witnesses, mode)
    if mode == "durable":
        report.figures["catch_up_seconds"] = workload.catch_up  # type: ignore[assignment]
    violations = workload.problems + report.violations
    result.update(
        applied=player.applied,
        faults_began_at=player.began_at,
        figures=dict(report.figures),
        violations=violations,
        ok=not violations,
        seconds=round(time.monotonic() - began, 1),
    )
    return result
