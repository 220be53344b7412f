"""Queue groups' dealing by credit (``_transports/_shares.py``): pure logic, no sockets."""

from __future__ import annotations

from shellbot._transports._shares import Shares

JOBS = b"jobs\xff"


def members_of(assigned: list | None) -> list:
    assert assigned is not None
    return [member.key for member, _ in assigned]


def test_equal_members_take_turns_and_the_least_loaded_gets_the_next() -> None:
    shares = Shares(window=10)
    for key in ("a", "b", "c"):
        shares.join(key, "g", JOBS, exact=True)
    dealt = [members_of(shares.route(JOBS, n, 1, 1))[0] for n in range(6)]
    assert sorted(dealt) == ["a", "a", "b", "b", "c", "c"]
    shares.credit("b", 2)  # b is done with its two: it has the fewest in flight
    assert members_of(shares.route(JOBS, "next", 1, 1)) == ["b"]


def test_a_member_at_its_window_gets_none_and_what_waits_leaves_with_credit() -> None:
    shares = Shares(window=2)
    shares.join("a", "g", JOBS, exact=True)
    assert members_of(shares.route(JOBS, 1, 1, 1)) == ["a"]
    assert members_of(shares.route(JOBS, 2, 1, 1)) == ["a"]
    assert shares.route(JOBS, 3, 1, 1) == []  # full: it waits
    assert shares.route(JOBS, 4, 1, 1) == []
    assert shares.waiting() == 2
    released = shares.credit("a", 1)
    assert [item for _, item in released] == [3]  # in order, as room comes
    assert [item for _, item in shares.credit("a", 3)] == [4]
    assert shares.waiting() == 0 and shares.lost == 0


def test_a_stalled_member_stops_getting_work_and_a_new_one_takes_what_waited() -> None:
    shares = Shares(window=2)
    shares.join("stalled", "g", JOBS, exact=True)
    for n in range(5):
        shares.route(JOBS, n, 1, 1)
    released = shares.join("fresh", "g", JOBS, exact=True)
    assert [(m.key, item) for m, item in released] == [("fresh", 2), ("fresh", 3)]
    assert shares.waiting() == 1


def test_what_a_member_held_when_it_left_is_lost_and_a_late_credit_takes_it_back() -> None:
    shares = Shares(window=100)
    shares.join("a", "g", JOBS, exact=True)
    shares.join("b", "g", JOBS, exact=True)
    for n in range(10):
        shares.route(JOBS, n, 1, 1)
    shares.leave("a", JOBS)
    assert shares.lost == 5
    shares.credit("a", 3)  # it had handed 3 before it left: they were not lost
    assert shares.lost == 2
    shares.credit("a", 3)  # said twice: counted once
    assert shares.lost == 2
    assert [members_of(shares.route(JOBS, n, 1, 1)) for n in range(2)] == [["b"], ["b"]]


def test_what_waited_for_a_group_whose_members_all_left_is_lost() -> None:
    shares = Shares(window=1)
    shares.join("a", "g", JOBS, exact=True)
    for n in range(4):
        shares.route(JOBS, n, 3, 1)  # pieces of 3 messages
    shares.leave_all("a")
    assert shares.lost == 12  # 3 in its hands, 9 waiting
    assert shares.route(JOBS, "after", 1, 1) is None  # no group wants it any more
    assert not shares.groups


def test_a_full_backlog_counts_what_it_cannot_keep() -> None:
    shares = Shares(window=1, backlog_bytes=10)
    shares.join("a", "g", JOBS, exact=True)
    shares.route(JOBS, 0, 1, 4)
    shares.route(JOBS, 1, 1, 6)  # waits: 6 bytes
    shares.route(JOBS, 2, 1, 6)  # over 10: lost
    assert shares.waiting() == 1 and shares.lost == 1


def test_each_group_gets_its_own_copy_from_the_members_that_want_the_topic() -> None:
    shares = Shares()
    shares.join("a", "workers", JOBS, exact=True)
    shares.join("b", "workers", b"", exact=False)  # every channel
    shares.join("c", "auditors", b"jo", exact=False)  # a pattern's literal start
    dealt = [sorted(members_of(shares.route(JOBS, n, 1, 1))) for n in range(4)]
    assert [d[-1] for d in dealt] == ["c"] * 4  # the only auditor, each time
    assert sorted(d[0] for d in dealt) == ["a", "a", "b", "b"]
    assert members_of(shares.route(b"other\xff", "x", 1, 1)) == ["b"]


def test_a_member_back_after_its_group_emptied_joins_the_group_as_it_is_now() -> None:
    shares = Shares(window=1)
    shares.join("a", "g", JOBS, exact=True)
    shares.route(JOBS, 0, 1, 1)
    shares.leave("a", JOBS)  # the group is gone with it; its one in flight lost
    assert shares.lost == 1 and not shares.groups
    shares.join("a", "g", JOBS, exact=True)  # back: what it held may come yet
    assert shares.lost == 0
    shares.route(JOBS, 1, 1, 1)  # waits: "a" still holds one
    assert shares.waiting() == 1
    assert [item for _, item in shares.credit("a", 1)] == [1]
