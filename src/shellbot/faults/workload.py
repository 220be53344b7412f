"""The workload's programs, each a process of its own (``python -m
shellbot.faults.workload publisher|subscriber SPEC``, SPEC a JSON object), and what
they write.

Each writes a log, one line at a time and at once, so what a SIGKILL leaves there
happened: a publisher ``p CHANNEL N`` once ``put()`` accepted message N of its life
on CHANNEL (the payload ``[publisher, life, N]``; N + 1 is its sequence number), a
subscriber ``m SENDER SEQUENCE CHANNEL PUBLISHER LIFE N`` once it was handed a
message; both ``s STATS`` now and then and ``done RESULT`` at a clean end.

They take turns with the runner on stdin and stdout: a publisher prints ``up``,
waits for a line, puts until the next line (``halt``: it prints ``halted``), then
stops at the next and prints ``done``; a subscriber prints ``ready`` (or
``not-ready``), reads until a line came and nothing arrived for ``quiet`` seconds,
then prints ``done``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import IO, Any

from shellbot import Context, errors
from shellbot.bus import Bus

STATS_INTERVAL = 0.25


def _bus(spec: dict[str, Any]) -> Bus:
    settings = {
        "address": spec["address"],
        "durable": spec["durable"],
        "send_timeout": spec["send_timeout"],
    }
    return Bus(Context({"bus": settings}))


def _say(word: str) -> None:
    print(word, flush=True)


def _line_event() -> threading.Event:
    """Set when the next line (or the end) of stdin comes."""
    event = threading.Event()

    def wait() -> None:
        sys.stdin.readline()
        event.set()

    threading.Thread(target=wait, daemon=True).start()
    return event


def _write(out: IO[str], kind: str, value: Any) -> None:
    out.write(f"{kind} {json.dumps(value)}\n")


def publisher(spec: dict[str, Any]) -> None:
    """Puts [name, life, N] round the channels at ``rate`` a second until told."""
    name, life, channels = spec["name"], spec["life"], spec["channels"]
    publisher = _bus(spec).publish()
    publisher.start()
    counts = dict.fromkeys(channels, 0)
    with open(spec["log"], "a", buffering=1) as out:
        _write(out, "up", {"pid": os.getpid(), "holds_hub": publisher.holds_hub})
        _say("up")
        sys.stdin.readline()
        halt = _line_event()
        interval = 1.0 / spec["rate"]
        due = next_stats = time.monotonic()
        turn = 0
        while not halt.is_set():
            channel = channels[turn % len(channels)]
            number = counts[channel]
            try:
                publisher.put(channel, [name, life, number])
            except errors.ShellbotError as error:  # not accepted: the number is free again
                _write(out, "refused", {"channel": channel, "n": number, "error": str(error)})
            else:
                counts[channel] = number + 1
                out.write(f"p {channel} {number}\n")
                turn += 1
            now = time.monotonic()
            if now >= next_stats:
                stats = {**publisher.stats, "holds_hub": publisher.holds_hub}
                _write(out, "s", {**stats, "at": round(time.time(), 3)})
                next_stats = now + STATS_INTERVAL
            due += interval
            if due > now:
                time.sleep(due - now)
            else:
                due = now  # behind (stopped, or a full queue): no burst to catch up
        _write(out, "s", {**publisher.stats, "holds_hub": publisher.holds_hub})
        _say("halted")
        sys.stdin.readline()
        confirmed = publisher.stop(timeout=20.0)
        _write(out, "done", {"confirmed": confirmed, "counts": counts, "stats": publisher.stats})
    _say("done")


def subscriber(spec: dict[str, Any]) -> None:
    """Receives from the channels, durably under ``durable`` and as a member of
    ``group`` when given, until told and then quiet for ``quiet`` seconds."""
    bus = _bus(spec)
    subscriber = bus.subscribe(
        spec["channels"], durable=spec.get("durable_name"), group=spec.get("group")
    )
    ready = subscriber.wait_ready(30.0)
    with open(spec["log"], "a", buffering=1) as out:
        _write(out, "up", {"pid": os.getpid(), "ready": ready})
        _say("ready" if ready else "not-ready")
        finish = _line_event()
        quiet = float(spec["quiet"])
        last = next_stats = time.monotonic()
        while True:
            message = subscriber.receive(block=True, timeout=0.1)
            now = time.monotonic()
            if message is not None:
                last = now
                payload = message.message
                if isinstance(payload, list) and len(payload) == 3:
                    publisher_name, life, number = payload
                else:  # not the workload's: written so that the checker says so
                    publisher_name, life, number = "?", -1, -1
                out.write(
                    f"m {message.sender} {message.sequence} {message.channel} "
                    f"{publisher_name} {life} {number}\n"
                )
            if now >= next_stats:
                _write(out, "s", {**subscriber.stats, "at": round(time.time(), 3)})
                next_stats = now + STATS_INTERVAL
            if finish.is_set() and now - last >= quiet:
                break
        stats = subscriber.stats
        subscriber.close()
        _write(out, "done", {"stats": stats})
    _say("done")


def main(argv: list[str]) -> None:
    role, spec = argv[0], json.loads(argv[1])
    # The bus's own account (reconnections, consumers made anew), on stderr: the
    # runner keeps it beside the log, where a failed run is read.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("shellbot").setLevel(logging.DEBUG)
    {"publisher": publisher, "subscriber": subscriber}[role](spec)


if __name__ == "__main__":
    main(sys.argv[1:])
