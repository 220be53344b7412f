"""Queue groups where the bus splits the stream itself (the ZeroMQ hub, ``memory://``).

Among the live members of a group, each message on their channels goes to one:
the member with the fewest messages in flight to it (sent, and not yet done with
by its program). A member returns credit as its program takes messages
(``credit``, a running total, so a credit lost or repeated on the way does no
harm). A member with ``window`` messages in flight gets no more: a member that
stalls stops getting work, and the others take its share. When every member of
a group is at its window, messages wait here, in order, up to ``BACKLOG_BYTES``
per group, and leave as credit returns.

Sequence gaps at one member mean nothing (it sees its share alone), so what a
group loses is counted here, where the stream is split: ``lost`` holds what
members had in flight when they left (a process killed, a subscriber closed
with messages it never handed), what waited for a group whose members all left,
and what a full backlog could not keep.

Pure logic, no I/O: the caller delivers what ``route`` and ``credit`` assign.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

WINDOW = 1000  # messages in flight to one member before it gets no more
# A member returns credit once its program is done with this many more, or is about to
# wait: before it runs dry, so that its next share is on its way while it works.
CREDIT_STEP = WINDOW // 4
BACKLOG_BYTES = 64 * 1024 * 1024  # per group: what waits while every member is full
GONE_KEPT = 1024  # members that left, kept to take their last credit late
CACHE_LIMIT = 100_000  # topics whose candidates are remembered between changes


class Member:
    """One receiver in one group."""

    __slots__ = ("credited", "group", "key", "owner", "prefixes", "sent")

    def __init__(self, key: Any, group: Group, owner: Any) -> None:
        self.key = key
        self.group = group
        self.owner = owner  # what the caller delivers to (a receiver, a batch topic)
        self.sent = 0
        self.credited = 0
        self.prefixes: dict[bytes, int] = {}

    @property
    def in_flight(self) -> int:
        return self.sent - self.credited


class Group:
    __slots__ = ("backlog", "backlog_bytes", "members", "name", "turn")

    def __init__(self, name: Any) -> None:
        self.name = name
        self.turn = 0  # where the next look for the least loaded starts: equals take turns
        self.members: list[Member] = []
        # (topic, item, count, size): in order, for whichever member has room first
        self.backlog: deque[tuple[bytes, Any, int, int]] = deque()
        self.backlog_bytes = 0


Assignment = tuple[Member, Any]


class Shares:
    """The groups of one hub or exchange, their members and what each has in flight."""

    def __init__(self, window: int = WINDOW, backlog_bytes: int = BACKLOG_BYTES) -> None:
        self.window = window
        self.backlog_bytes = backlog_bytes
        self.members: dict[Any, Member] = {}
        self.groups: dict[Any, Group] = {}
        self.lost = 0
        self._gone: OrderedDict[Any, Member] = OrderedDict()
        self._exact: dict[bytes, set[Member]] = {}
        self._prefixes: dict[bytes, set[Member]] = {}
        # topic -> for each group that wants it, the members that do
        self._cache: dict[bytes, tuple[tuple[Member, ...], ...]] = {}

    # -- membership
    def join(
        self, key: Any, group: Any, prefix: bytes, exact: bool, owner: Any = None
    ) -> list[Assignment]:
        """Member ``key`` of ``group`` wants the topics that start with ``prefix`` (only
        ``prefix`` itself when ``exact``); returns what waited and may go to it now."""
        member = self.members.get(key)
        if member is None:
            current = self.groups.get(group) or self._new_group(group)
            member = self._gone.pop(key, None)
            if member is not None and member.group.name == group:  # back: it may take them yet
                self.lost -= member.in_flight
                member.group = current
            else:
                member = Member(key, current, owner)
            self.members[key] = member
            current.members.append(member)
        count = member.prefixes.get(prefix, 0)
        member.prefixes[prefix] = count + 1
        if count == 0:
            table = self._exact if exact else self._prefixes
            table.setdefault(prefix, set()).add(member)
            self._cache.clear()
        return self._release(member.group)

    def leave(self, key: Any, prefix: bytes) -> list[Assignment]:
        """Undoes one ``join``; a member with no prefix left has left the group, and what
        it had in flight is lost. Returns what waited and may go to the others now."""
        member = self.members.get(key)
        if member is None or prefix not in member.prefixes:
            return []
        count = member.prefixes.pop(prefix) - 1
        if count > 0:
            member.prefixes[prefix] = count
            return []
        for table in (self._exact, self._prefixes):
            holders = table.get(prefix)
            if holders is not None and member in holders:
                holders.discard(member)
                if not holders:
                    del table[prefix]
        self._cache.clear()
        if not member.prefixes:
            self._remove(member)
        return self._release(member.group)

    def leave_all(self, key: Any) -> list[Assignment]:
        """Member ``key`` is gone (closed): every prefix it held."""
        member = self.members.get(key)
        released: list[Assignment] = []
        while member is not None and member.prefixes:
            released += self.leave(key, next(iter(member.prefixes)))
        return released

    def _new_group(self, name: Any) -> Group:
        group = self.groups[name] = Group(name)
        return group

    def _remove(self, member: Member) -> None:
        del self.members[member.key]
        group = member.group
        group.members.remove(member)
        self.lost += member.in_flight
        self._gone[member.key] = member
        if len(self._gone) > GONE_KEPT:
            self._gone.popitem(last=False)
        if not group.members:
            del self.groups[group.name]
            self.lost += sum(count for _, _, count, _ in group.backlog)
            group.backlog.clear()
            group.backlog_bytes = 0

    # -- messages
    def route(self, topic: bytes, item: Any, count: int, size: int) -> list[Assignment] | None:
        """Which member of each group that wants ``topic`` gets ``item`` (``count``
        messages, ``size`` bytes); None when no group wants it. A group whose members
        are all full keeps it for later (``credit``)."""
        choices = self._cache.get(topic)
        if choices is None:
            choices = self._candidates(topic)
        if not choices:
            return None
        assigned: list[Assignment] = []
        window = self.window
        for members in choices:
            group = members[0].group
            if not group.backlog:
                member = _least(members, group)
                if member.sent - member.credited < window:
                    member.sent += count
                    assigned.append((member, item))
                    continue
            if group.backlog_bytes + size > self.backlog_bytes:
                self.lost += count
                continue
            group.backlog.append((topic, item, count, size))
            group.backlog_bytes += size
        return assigned

    def credit(self, key: Any, total: int) -> list[Assignment]:
        """Member ``key``'s program is done with ``total`` messages since it joined;
        returns what waited and may go now."""
        member = self.members.get(key)
        if member is None:
            gone = self._gone.get(key)
            if gone is not None and total > gone.credited:  # taken after all, before it left
                self.lost -= min(total, gone.sent) - gone.credited
                gone.credited = min(total, gone.sent)
            return []
        if total <= member.credited:
            return []
        member.credited = min(total, member.sent)
        return self._release(member.group)

    def waiting(self) -> int:
        """Messages waiting in groups' backlogs."""
        return sum(count for group in self.groups.values() for _, _, count, _ in group.backlog)

    def _release(self, group: Group) -> list[Assignment]:
        released: list[Assignment] = []
        backlog = group.backlog
        window = self.window
        while backlog:
            topic, item, count, size = backlog[0]
            members = self._members_of(topic, group)
            if members:
                member = _least(members, group)
                if member.sent - member.credited >= window:
                    break
                member.sent += count
                released.append((member, item))
            else:  # no member wants it any more
                self.lost += count
            backlog.popleft()
            group.backlog_bytes -= size
        return released

    def _members_of(self, topic: bytes, group: Group) -> tuple[Member, ...]:
        choices = self._cache.get(topic)
        if choices is None:
            choices = self._candidates(topic)
        for members in choices:
            if members[0].group is group:
                return members
        return ()

    def _candidates(self, topic: bytes) -> tuple[tuple[Member, ...], ...]:
        wanting = set(self._exact.get(topic, ()))
        for prefix, members in self._prefixes.items():
            if topic.startswith(prefix):
                wanting |= members
        by_group: dict[Any, list[Member]] = {}
        for member in wanting:
            by_group.setdefault(member.group.name, []).append(member)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        found = self._cache[topic] = tuple(tuple(members) for members in by_group.values())
        return found


def _least(members: tuple[Member, ...], group: Group) -> Member:
    """The member with the fewest messages in flight; equals take turns."""
    count = len(members)
    start = group.turn % count
    group.turn = start + 1
    best = members[start]
    least = best.sent - best.credited
    for index in range(start + 1, start + count):
        member = members[index % count]
        in_flight = member.sent - member.credited
        if in_flight < least:
            best, least = member, in_flight
    return best
