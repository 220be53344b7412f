"""What arrived, compared with what was put: the workload's logs read back and checked.

Every subscriber life: each message once (sender, channel, sequence), in order per
sender and channel, its sequence its number + 1; at a clean end its stats agree with
what it was handed (``received``, and on core ``missed`` equal to the gaps it saw).

Core (ZeroMQ, NATS): a witness (a subscriber ready before the first put and never
killed) accounts for every message of a publisher life that ended cleanly, exactly:
received + counted missed = published. A message lost before the first that
arrived or after the last, where no gap could reveal it, is a loss without a count.
Of a killed publisher life, what it put that never left the process ("in flight at
the kill") cannot be counted by anyone: it is a figure, not a violation.

Durable: every message the server acknowledged reaches every durable name (over
all its subscriber lives); of a killed publisher life, which ones were acknowledged
is unknown, but at least as many as its last ``stored`` figure must arrive.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .groups import check_group

# (publisher index as named in the payload, life, channel)
Stream = tuple[str, int, str]


@dataclass
class PublisherLife:
    name: str
    life: int
    accepted: Counter[str] = field(default_factory=Counter)  # channel -> messages put
    stored: int = 0  # the last 'stored' figure it wrote (durable)
    done: dict[str, Any] | None = None  # its result at a clean end
    # the highest of its hub's counters it wrote (queue mode: group_lost, unrouted, ...)
    hub: Counter[str] = field(default_factory=Counter)
    held_hub: bool = False  # it held the hub at some time
    holds_hub_at_end: bool = False  # it held the hub when it wrote its last stats


@dataclass
class SubscriberLife:
    index: int
    life: int
    witness: bool
    records: list[tuple[int, int, str, str, int, int]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    done: bool = False
    member: bool = False  # of the queue group: it sees its share alone


def _lines(path: Path) -> list[str]:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.split("\n")
    return lines[:-1]  # the last is empty, or cut short by a kill


def read_publisher(path: Path, name: str, life: int) -> PublisherLife:
    result = PublisherLife(name, life)
    for line in _lines(path):
        kind, _, rest = line.partition(" ")
        if kind == "p":
            channel, _, _ = rest.rpartition(" ")
            result.accepted[channel] += 1
        elif kind == "s":
            stats = json.loads(rest)
            result.stored = int(stats.get("stored", 0))
            _read_hub(result, stats)
        elif kind == "done":
            result.done = json.loads(rest)
            result.accepted = Counter(result.done["counts"])
            result.stored = int(result.done["stats"].get("stored", 0))
            _read_hub(result, result.done["stats"], final=False)
    return result


HUB_COUNTS = ("group_lost", "unrouted", "dropped")  # the last while it held the hub
HUB_ROOM = ("group_waiting", "group_members")  # the highest while it held the hub


def _read_hub(result: PublisherLife, stats: dict[str, Any], final: bool = True) -> None:
    """The hub's counters in a stats line of its holder (a publisher's stats are zeros
    once it holds no hub). Counts are kept as last written, since ``group_lost`` goes
    down again when a member that left comes back for what it had in flight."""
    holds = bool(stats.get("holds_hub")) if final else result.holds_hub_at_end
    if holds:
        for key in HUB_COUNTS:
            result.hub[key] = int(stats.get(key, 0))
        for key in HUB_ROOM:
            result.hub[key] = max(result.hub[key], int(stats.get(key, 0)))
    if final:
        result.held_hub = result.held_hub or holds
        result.holds_hub_at_end = holds


def read_subscriber(path: Path, index: int, life: int, witness: bool) -> SubscriberLife:
    result = SubscriberLife(index, life, witness)
    for line in _lines(path):
        kind, _, rest = line.partition(" ")
        if kind == "m":
            sender, sequence, channel, name, publisher_life, number = rest.split(" ")
            result.records.append(
                (int(sender), int(sequence), channel, name, int(publisher_life), int(number))
            )
        elif kind == "s":
            result.stats = json.loads(rest)
        elif kind == "done":
            result.stats = json.loads(rest)["stats"]
            result.done = True
    return result


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    figures: Counter[str] = field(default_factory=Counter)

    def violate(self, text: str) -> None:
        if len(self.violations) < 50:  # the first ones say enough
            self.violations.append(text)
        self.figures["violations"] += 1


def _check_life(life: SubscriberLife, durable: bool, report: Report) -> dict[Stream, list[int]]:
    """The checks of one subscriber life; returns the sequences it got per stream."""
    where = f"subscriber {life.index} life {life.life}"
    seen: set[tuple[int, str, int]] = set()
    last: dict[tuple[int, str], int] = {}
    owner: dict[int, tuple[str, int]] = {}
    streams: dict[Stream, list[int]] = defaultdict(list)
    gaps = 0
    for sender, sequence, channel, name, publisher_life, number in life.records:
        if name == "?" or sequence != number + 1:
            report.violate(f"{where}: sequence {sequence} carries {name}/{number} on {channel}")
        if owner.setdefault(sender, (name, publisher_life)) != (name, publisher_life):
            report.violate(f"{where}: sender {sender:x} speaks for two publisher lives")
        key = (sender, channel, sequence)
        if key in seen:
            report.violate(f"{where}: {name}/{publisher_life} #{number} on {channel} twice")
            continue
        seen.add(key)
        previous = last.get((sender, channel))
        if previous is not None and sequence < previous:
            report.violate(
                f"{where}: {name}/{publisher_life} on {channel}: #{number} after #{previous - 1}"
            )
        elif previous is not None:
            gaps += sequence - previous - 1
        last[(sender, channel)] = max(sequence, previous or 0)
        streams[(name, publisher_life, channel)].append(sequence)
    report.figures["group_handed" if life.member else "handed"] += len(life.records)
    report.figures["counted_missed"] += int(life.stats.get("missed", 0))
    report.figures["redelivered_dropped"] += int(life.stats.get("duplicates", 0))
    report.figures["dropped_bad_input"] += int(life.stats.get("dropped", 0))
    if life.done and not durable:
        if life.stats.get("received") != len(life.records):
            report.violate(
                f"{where}: stats say {life.stats.get('received')} received, "
                f"{len(life.records)} were handed"
            )
        if life.member and life.stats.get("missed"):  # gaps in a share mean nothing
            report.violate(f"{where}: a group member says {life.stats['missed']} missed")
        elif not life.member and life.stats.get("missed") != gaps:
            report.violate(f"{where}: stats say {life.stats.get('missed')} missed, gaps {gaps}")
    if life.stats.get("dropped"):
        report.violate(f"{where}: {life.stats['dropped']} dropped as bad input")
    return streams


def _check_core_witness(
    got: dict[Stream, list[int]], publishers: list[PublisherLife], where: str, report: Report
) -> None:
    for publisher in publishers:
        for channel, published in publisher.accepted.items():
            sequences = got.get((publisher.name, publisher.life, channel), [])
            first, last = (min(sequences), max(sequences)) if sequences else (1, 0)
            head = first - 1 if sequences else 0
            tail = published - last
            stream = f"{publisher.name}/{publisher.life} on {channel}"
            if publisher.done is None:  # killed: its tail may never have left
                if tail > 0:
                    report.figures["in_flight_at_kill"] += tail
                tail = 0
            if last > published and publisher.done is not None:
                report.violate(f"{where}: {stream}: #{last - 1} arrived, {published} were put")
            if head + max(tail, 0):
                report.figures["lost_uncounted"] += head + max(tail, 0)
                report.violate(
                    f"{where}: {stream}: {head} lost before the first that came, "
                    f"{max(tail, 0)} after the last, without a count ({published} put)"
                )
            report.figures["published_to_witness"] += published if publisher.done else last


def _all_acknowledged(publisher: PublisherLife) -> bool:
    """A clean end with every message confirmed stored: each one is known acknowledged.
    (``stop()`` says True even when some were given up before: ``not_stored`` tells.)"""
    if publisher.done is None:
        return False
    stats = publisher.done["stats"]
    return bool(publisher.done["confirmed"]) and not stats.get("not_stored")


def _check_durable_name(
    lives: list[SubscriberLife],
    got: dict[Stream, set[int]],
    publishers: list[PublisherLife],
    report: Report,
) -> None:
    where = f"durable subscriber {lives[0].index} ({len(lives)} lives)"
    for publisher in publishers:
        delivered = 0
        for channel, published in publisher.accepted.items():
            sequences = got.get((publisher.name, publisher.life, channel), set())
            delivered += len(sequences)
            stream = f"{publisher.name}/{publisher.life} on {channel}"
            if _all_acknowledged(publisher):
                missing = set(range(1, published + 1)) - sequences
                if missing:
                    report.figures["acknowledged_lost"] += len(missing)
                    report.violate(
                        f"{where}: {stream}: {len(missing)} acknowledged, never delivered "
                        f"(e.g. #{min(missing) - 1}; {published} put)"
                    )
            if publisher.done is not None and sequences and max(sequences) > published:
                report.violate(f"{where}: {stream}: #{max(sequences) - 1} was never put")
        if not _all_acknowledged(publisher) and delivered < publisher.stored:
            how = "killed" if publisher.done is None else "some not stored"
            report.figures["acknowledged_lost"] += publisher.stored - delivered
            report.violate(
                f"{where}: {publisher.name}/{publisher.life} ({how}) had {publisher.stored} "
                f"acknowledged, {delivered} delivered"
            )


def check(
    publishers: list[PublisherLife],
    subscribers: list[SubscriberLife],
    durable: bool,
    group: bool = False,
) -> Report:
    """Checks every life; with ``group``, the subscribers marked ``member`` are one queue
    group, checked together (``groups.check_group``) against the witnesses."""
    report = Report()
    witnessed: list[dict[Stream, list[int]]] = []
    shares: list[tuple[SubscriberLife, dict[Stream, list[int]]]] = []
    report.figures["published"] = sum(sum(p.accepted.values()) for p in publishers)
    report.figures["publisher_lives_killed"] = sum(p.done is None for p in publishers)
    report.figures["not_stored"] = sum(
        int(p.done["stats"].get("not_stored", 0)) for p in publishers if p.done
    )
    by_name: dict[int, list[SubscriberLife]] = defaultdict(list)
    for life in subscribers:
        by_name[life.index].append(life)
    for index, lives in sorted(by_name.items()):
        union: dict[Stream, set[int]] = defaultdict(set)
        for life in lives:
            streams = _check_life(life, durable, report)
            if life.member:
                shares.append((life, streams))
            for stream, sequences in streams.items():
                union[stream].update(sequences)
            if life.witness and not durable:
                where = f"witness subscriber {index}"
                if not life.done:
                    report.violate(f"{where} did not end cleanly")
                _check_core_witness(streams, publishers, where, report)
                witnessed.append(streams)
        if durable:
            if not lives[-1].done:
                report.violate(f"durable subscriber {index}: its last life did not end cleanly")
            _check_durable_name(lives, union, publishers, report)
    if group:
        check_group(shares, witnessed, publishers, report)
    return report


def read_and_check(directory: Path, witnesses: int, mode: str) -> Report:
    """Reads ``publisher-I-L.log`` and ``subscriber-I-L.log`` in ``directory`` and checks
    them as ``mode`` promises (in queue mode, the subscribers past the witnesses are the
    group's members)."""
    publishers = []
    for path in sorted(directory.glob("publisher-*.log")):
        _, index, life = path.stem.split("-")
        publishers.append(read_publisher(path, index, int(life)))
    subscribers = []
    for path in sorted(directory.glob("subscriber-*.log"), key=lambda p: p.stem):
        _, index, life = path.stem.split("-")
        subscriber = read_subscriber(path, int(index), int(life), int(index) < witnesses)
        subscriber.member = mode == "queue" and not subscriber.witness
        subscribers.append(subscriber)
    subscribers.sort(key=lambda s: (s.index, s.life))
    return check(publishers, subscribers, mode == "durable", group=mode == "queue")
