"""The fault harness: its schedules replay by seed, its checker finds what was lost,
doubled or reordered, and a few seeded schedules per mode hold against the bus."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from shellbot.faults import checker, netns, run_once, schedule
from shellbot.faults.checker import PublisherLife, SubscriberLife
from shellbot.faults.cli import skip_reason

SEEDS = (1, 2)  # a few schedules per mode: the CI-sized set
DURATION = 5.0


def test_a_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    for mode in schedule.MODES:
        first = schedule.make(7, mode, 20.0)
        assert first == schedule.make(7, mode, 20.0)
        assert first != schedule.make(8, mode, 20.0)
        targets = {target for _, target in schedule.choices(mode, schedule.Shape())}
        assert {fault.target for fault in first} <= targets
        assert all(0 < fault.at < 20.0 for fault in first)


def test_cluster_faults_never_overlap_and_witnesses_are_never_killed() -> None:
    for seed in range(50):
        faults = schedule.make(seed, "cluster", 30.0)
        on_cluster = [fault for fault in faults if fault.on_cluster]
        for before, after in itertools.pairwise(on_cluster):
            assert before.ends < after.at
        assert ("kill", "subscriber:0") not in {(f.action, f.target) for f in faults}


def test_queue_schedules_kill_every_member_and_the_hub_but_never_the_witness() -> None:
    pairs = set(schedule.choices("queue", schedule.Shape()))
    members = {("kill", f"subscriber:{index}") for index in (1, 2, 3)}
    assert members | {("kill", "hub"), ("stop", "hub")} <= pairs
    assert ("kill", "subscriber:0") not in pairs and ("stop", "subscriber:0") in pairs


def test_the_cli_prints_the_seed_and_replays_the_schedule() -> None:
    command = [sys.executable, "-m", "shellbot.faults", "--mode", "cluster", "--seed", "42",
               "--duration", "10", "--schedule-only"]  # fmt: skip
    runs = [subprocess.run(command, capture_output=True, text=True, timeout=60) for _ in (1, 2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout.startswith("seed 42 mode cluster: ")
    assert runs[0].stdout == runs[1].stdout
    assert "for" in runs[0].stdout.split("\n")[1]  # a fault line


def _publisher(name: str, counts: dict[str, int], confirmed: bool = True) -> PublisherLife:
    done = {"confirmed": confirmed, "counts": counts, "stats": {"unconfirmed": 0}}
    return PublisherLife(name, 0, Counter(counts), done=done)


def _subscriber(
    records: list[tuple[int, str]], missed: int, witness: bool = True
) -> SubscriberLife:
    """A clean life handed (sequence, channel) of sender 7, publisher '0' life 0."""
    life = SubscriberLife(0, 0, witness, done=True)
    life.records = [(7, sequence, channel, "0", 0, sequence - 1) for sequence, channel in records]
    life.stats = {"received": len(records), "missed": missed, "dropped": 0}
    return life


def test_the_checker_passes_what_is_whole_and_counted() -> None:
    publishers = [_publisher("0", {"a": 4})]
    whole = _subscriber([(1, "a"), (2, "a"), (3, "a"), (4, "a")], missed=0)
    assert checker.check(publishers, [whole], durable=False).violations == []
    counted = _subscriber([(1, "a"), (4, "a")], missed=2)
    report = checker.check(publishers, [counted], durable=False)
    assert report.violations == [] and report.figures["counted_missed"] == 2


@pytest.mark.parametrize(
    ("records", "missed", "found"),
    [
        ([(1, "a"), (2, "a"), (3, "a")], 0, "after the last, without a count"),
        ([(2, "a"), (3, "a"), (4, "a")], 0, "before the first that came"),
        ([(1, "a"), (4, "a")], 0, "stats say 0 missed, gaps 2"),
        ([(1, "a"), (2, "a"), (2, "a"), (3, "a"), (4, "a")], 0, "twice"),
        ([(1, "a"), (3, "a"), (2, "a"), (4, "a")], 0, "after #2"),
    ],
)
def test_the_checker_finds_loss_without_a_count_duplicates_and_disorder(
    records: list[tuple[int, str]], missed: int, found: str
) -> None:
    report = checker.check([_publisher("0", {"a": 4})], [_subscriber(records, missed)], False)
    assert any(found in violation for violation in report.violations), report.violations


def test_the_durable_checker_finds_an_acknowledged_message_never_delivered() -> None:
    publishers = [_publisher("0", {"a": 3})]
    first = _subscriber([(1, "a"), (2, "a")], missed=0)
    first.done = False  # killed: a second life carries on, handed #1 again and #2
    second = _subscriber([(2, "a")], missed=0)
    second.life = 1
    report = checker.check(publishers, [first, second], durable=True)
    assert report.violations == [
        "durable subscriber 0 (2 lives): 0/0 on a: 1 acknowledged, never delivered (e.g. #2; 3 put)"
    ]
    second.records.append((7, 3, "a", "0", 0, 2))
    assert checker.check(publishers, [first, second], durable=True).violations == []


def _member(
    index: int, life: int, records: list[tuple[int, str]], done: bool = True
) -> SubscriberLife:
    member = _subscriber(records, missed=0, witness=False)
    member.index, member.life, member.done, member.member = index, life, done, True
    return member


def _hub(group_lost: int, **counters: int) -> PublisherLife:
    """A publisher life that held the hub to the end, its counters as it wrote them."""
    holder = _publisher("0", {"a": 4})
    holder.held_hub = holder.holds_hub_at_end = True
    holder.hub.update(group_lost=group_lost, **counters)
    return holder


def test_the_group_checker_passes_a_split_stream_and_a_counted_loss() -> None:
    witness = _subscriber([(1, "a"), (2, "a"), (3, "a"), (4, "a")], missed=0)
    split = [_member(1, 0, [(1, "a"), (3, "a")]), _member(2, 0, [(2, "a"), (4, "a")])]
    report = checker.check([_hub(0)], [witness, *split], durable=False, group=True)
    assert report.violations == [] and report.figures["group_handed"] == 4
    # member 2 killed with #4 in flight, which the hub counted
    lossy = [split[0], _member(2, 0, [(2, "a")], done=False), _member(2, 1, [])]
    report = checker.check([_hub(1)], [witness, *lossy], durable=False, group=True)
    assert report.violations == [] and report.figures["group_lost_given_witness"] == 1


@pytest.mark.parametrize(
    ("members", "group_lost", "found"),
    [
        ([[(1, "a"), (2, "a")], [(2, "a"), (3, "a"), (4, "a")]], 0, "handed to member 1"),
        ([[(1, "a"), (2, "a"), (2, "a")], [(3, "a"), (4, "a")]], 0, "twice"),
        ([[(1, "a"), (3, "a"), (2, "a")], [(4, "a")]], 0, "after #2"),
        ([[(1, "a"), (3, "a")], [(2, "a")]], 0, "the witness got reached no member"),
        ([[(1, "a"), (3, "a")], [(2, "a"), (4, "a")]], 2000, "killed member lives can have"),
    ],
)
def test_the_group_checker_finds_doubles_disorder_and_losses_without_a_count(
    members: list[list[tuple[int, str]]], group_lost: int, found: str
) -> None:
    witness = _subscriber([(1, "a"), (2, "a"), (3, "a"), (4, "a")], missed=0)
    lives = [_member(index + 1, 0, records) for index, records in enumerate(members)]
    report = checker.check([_hub(group_lost)], [witness, *lives], durable=False, group=True)
    assert any(found in violation for violation in report.violations), report.violations


def test_a_killed_hub_leaves_room_for_what_it_never_counted() -> None:
    witness = _subscriber([(1, "a"), (2, "a"), (3, "a"), (4, "a")], missed=0)
    member = _member(1, 0, [(1, "a"), (2, "a")])
    holder = _hub(0, group_members=1)
    report = checker.check([holder], [witness, member], durable=False, group=True)
    assert any("reached no member" in violation for violation in report.violations)
    holder.holds_hub_at_end = False  # taken over: what it had sent its member died with it
    assert checker.check([holder], [witness, member], durable=False, group=True).violations == []


def _run_mode(mode: str, tmp_path: Path) -> None:
    reason = skip_reason(mode)
    if reason:
        pytest.skip(f"{mode}: {reason}")
    failed = []
    for seed in SEEDS:
        result = run_once(mode, seed, DURATION, tmp_path / f"{mode}-{seed}")
        print(json.dumps({k: result[k] for k in ("seed", "ok", "figures", "applied")}))
        assert result["applied"], "a schedule with no fault tests nothing"
        assert result["figures"]["published"] > 0
        if not result["ok"]:
            failed.append(f"{result['replay']}: {result['violations'][:5]}")
    assert not failed, "\n".join(failed)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "mode",
    [
        "zmq",
        "nats",
        "cluster",
        pytest.param(
            "durable",
            marks=pytest.mark.xfail(
                reason="a hole, half fixed: a sender's first message stored after its later "
                "ones (its run was sent again) is handed, but after them: order per sender "
                "and channel is not kept then (docs/faults.md, finding 1)",
                strict=False,
            ),
        ),
        pytest.param(
            "queue",
            marks=pytest.mark.xfail(
                reason="holes found: a live group member that was, or whose hub was, stopped "
                "by SIGSTOP may get nothing more, its share lost without a count; what is put "
                "while no member is live reaches no member and no count (docs/faults.md, "
                "findings 9 and 10)",
                strict=False,
            ),
        ),
    ],
)
def test_seeded_fault_schedules_lose_nothing_without_a_count(mode: str, tmp_path: Path) -> None:
    _run_mode(mode, tmp_path)
    if mode in schedule.CLUSTER_MODES:  # the run's namespaces are gone
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"{netns.PREFIX}{os.getpid()}r" not in listed
