"""Queue groups, run once per transport (tcp, ipc, inproc, memory, nats): each message
on a group's channels goes to one live member; everyone else gets their own copy."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from conftest import Subscribers, eventually

from shellbot.bus import Bus, Publisher, Subscriber


def take_shares(members: list[Subscriber], total: int, timeout: float = 30.0) -> list[list[Any]]:
    """What each member gets, taken in turns (a few at a time each, as equal workers
    would), until ``total`` came or ``timeout`` seconds passed."""
    shares: list[list[Any]] = [[] for _ in members]
    deadline = time.monotonic() + timeout
    taken = 0
    while taken < total and time.monotonic() < deadline:
        idle = True
        for share, member in zip(shares, members, strict=True):
            for _ in range(8):
                message = member.get()
                if message is None:
                    break
                share.append(message)
                taken += 1
                idle = False
        if idle:
            time.sleep(0.001)
    return shares


def assert_once_each(shares: list[list[Any]], expected: list[Any]) -> None:
    everything = [message for share in shares for message in share]
    doubled = [message for message, count in Counter(everything).items() if count > 1]
    assert not doubled, f"delivered twice: {doubled[:5]}"
    assert sorted(everything) == sorted(expected)


def test_each_message_goes_to_one_member_and_outsiders_get_their_own_copy(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    workers = [subscribers(bus, "jobs", group="workers") for _ in range(3)]
    auditors = [subscribers(bus, "jobs", group="auditors") for _ in range(2)]
    everyone = subscribers(bus, "jobs")
    sent = list(range(300))
    for number in sent:
        publisher.put("jobs", number)
    assert_once_each(take_shares(workers, len(sent)), sent)
    assert_once_each(take_shares(auditors, len(sent)), sent)
    assert [everyone.get(block=True, timeout=5.0) for _ in sent] == sent
    for member in workers + auditors:
        assert member.stats["missed"] == 0  # a share has gaps by design: none counted
    assert all(member.get() is None for member in workers + auditors)


def test_groups_work_with_lists_patterns_and_every_channel(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    listed = [subscribers(bus, ["a", "b"], group="listed") for _ in range(2)]
    patterned = [subscribers(bus, "jobs.*", pattern=True, group="patterned") for _ in range(2)]
    everything = [subscribers(bus, "", group="everything") for _ in range(2)]
    sent: dict[str, list[str]] = {"a": [], "b": [], "jobs": [], "other": ["other"]}
    for number in range(100):
        for channel in ("a", "b", f"jobs.{number % 3}"):
            publisher.put(channel, f"{channel}/{number}")
            sent[channel.split(".")[0]].append(f"{channel}/{number}")
    publisher.put("other", "other")
    assert_once_each(take_shares(listed, 200), sent["a"] + sent["b"])
    assert_once_each(take_shares(patterned, 100), sent["jobs"])
    assert_once_each(take_shares(everything, 301), [m for ms in sent.values() for m in ms])


def test_a_group_name_is_checked_at_the_call(bus: Bus) -> None:
    with pytest.raises(TypeError, match="group"):
        bus.subscribe("jobs", group=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group"):
        bus.subscribe("jobs", group="")


def test_asyncio_members_share_the_work(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    members = [subscribers(bus, "jobs", group="async") for _ in range(3)]
    sent = list(range(200))

    async def work(member: Subscriber, taken: list[Any]) -> None:
        while sum(map(len, shares)) < len(sent):
            message = await member.aget(timeout=0.2)
            if message is not None:
                taken.append(message)

    shares: list[list[Any]] = [[] for _ in members]

    async def main() -> None:
        for number in sent:
            publisher.put("jobs", number)
        await asyncio.wait_for(
            asyncio.gather(*(work(m, s) for m, s in zip(members, shares, strict=True))), 30
        )

    asyncio.run(main())
    assert_once_each(shares, sent)


def test_eight_equal_members_share_100000_messages_evenly(
    address: str, bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    members = [subscribers(bus, "jobs", group="even") for _ in range(8)]
    total = 100_000
    for number in range(total):
        publisher.put("jobs", number)
    shares = take_shares(members, total, timeout=60.0)
    assert_once_each(shares, list(range(total)))
    sizes = [len(share) for share in shares]
    if address.startswith("nats://"):
        # The server deals each NATS message (a publisher joins up to 8 KiB of a channel's
        # messages into one under a backlog) to a member at random: even over many only.
        assert min(sizes) > 0, sizes
    else:
        assert max(sizes) <= 1.10 * min(sizes), sizes


@pytest.mark.embedded_hub  # a NATS server deals at random, to stalled members too
def test_a_stalled_member_stops_getting_work_and_the_others_take_it_all(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    stalled = subscribers(bus, "jobs", group="stall")
    working = [subscribers(bus, "jobs", group="stall") for _ in range(3)]
    stalled_first = stalled.get(block=False)  # it takes nothing from now on
    total = 30_000
    for number in range(total):
        publisher.put("jobs", number)
    # Only its window (and a last piece) went to the stalled member: the rest comes here.
    shares = take_shares(working, total - 1200, timeout=60.0)
    assert sum(map(len, shares)) >= total - 1200
    held = []
    while (message := stalled.get(block=True, timeout=1.0)) is not None:
        held.append(message)
    shares += take_shares(working, total - sum(map(len, shares)) - len(held), timeout=10.0)
    assert stalled_first is None
    assert len(held) <= 1200
    assert_once_each([*shares, held], list(range(total)))  # 0 lost
    assert publisher.stats["group_lost"] == 0


@pytest.mark.embedded_hub
def test_what_a_closed_member_never_handed_is_counted_lost_and_the_rest_goes_on(
    bus: Bus, publisher: Publisher, subscribers: Subscribers
) -> None:
    leaving = subscribers(bus, "jobs", group="leave")
    staying = subscribers(bus, "jobs", group="leave")
    for number in range(100):
        publisher.put("jobs", number)
    assert eventually(lambda: publisher.stats["group_members"] == 2)
    handed = [leaving.get(block=True, timeout=5.0)]  # the first is handed, the rest held
    rest = take_shares([staying], 1, timeout=5.0)[0]
    assert eventually(lambda: leaving.stats["received"] >= 1)
    leaving.close()
    assert eventually(lambda: publisher.stats["group_members"] == 1)
    for number in range(100, 200):
        publisher.put("jobs", number)
    while (message := staying.get(block=True, timeout=1.0)) is not None:
        rest.append(message)
    assert set(range(100, 200)) <= set(rest)  # after it left, everything to the other
    lost = 200 - len(handed) - len(rest)
    assert lost > 0
    assert eventually(lambda: publisher.stats["group_lost"] == lost), publisher.stats
