"""Programs for other processes in the durable tests (spawned, so importable by name)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shellbot import Context
from shellbot.bus import Bus


def durable_bus(address: str, **settings: Any) -> Bus:
    return Bus(Context({"bus": {"address": address, "durable": True, **settings}}))


def durable_reader(address: str, name: str, channels: list[str], log: str, reports: Any) -> None:
    """A durable subscriber that writes each message it was handed to ``log``, one
    line each, at once (what a kill -9 leaves there was handed); reports ``ready``,
    and ``done`` with its stats once it reads ``'end'`` on every channel."""
    subscriber = durable_bus(address).subscribe(channels, durable=name)
    reports.put(("ready", subscriber.wait_ready(15.0)))
    ends = 0
    with Path(log).open("a", buffering=1) as out:
        while ends < len(channels):
            message = subscriber.receive(block=True, timeout=30.0)
            if message is None:
                reports.put(("silent", subscriber.stats))
                return
            if message.message == "end":
                ends += 1
                continue
            out.write(f"{message.channel} {message.message}\n")
    subscriber.close()
    reports.put(("done", subscriber.stats))


def durable_publisher(
    address: str, channel: str, count: int, rate: float, reports: Any, log: str | None = None
) -> None:
    """Puts 0..count-1 on ``channel`` at ``rate`` messages a second, then ``'end'``;
    reports ``done`` with whether ``stop()`` confirmed everything stored, and the stats.
    With ``log``, writes each number once ``put()`` returned (what a kill -9 leaves
    there was put)."""
    publisher = durable_bus(address).publish()
    reports.put(("up", True))
    out = Path(log).open("a", buffering=1) if log else None  # noqa: SIM115 - to the end
    due = time.monotonic()
    for index in range(count):
        publisher.put(channel, index)
        if out is not None:
            out.write(f"{channel} {index}\n")
        due += 1.0 / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    publisher.put(channel, "end")
    confirmed = publisher.stop(timeout=30.0)
    reports.put(("done", confirmed, publisher.stats))


def read_log(path: Path) -> list[tuple[str, int]]:
    """The lines a durable reader wrote; a last line cut short by a kill is left out."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        channel, _, number = line.partition(" ")
        if number.isdigit():
            rows.append((channel, int(number)))
    return rows


def durable_starter(address: str, name: str, channels: list[str], go: Any, reports: Any) -> None:
    """A durable subscriber that starts once ``go`` is set, and then only waits (for a
    kill); reports ``ready`` if it gets that far."""
    if not go.wait(30.0):
        return
    subscriber = durable_bus(address).subscribe(channels, durable=name)
    reports.put(("ready", subscriber.wait_ready(30.0)))
    time.sleep(60.0)
