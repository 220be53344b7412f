"""Queue mode's checks: the subscribers past the witnesses are one queue group on the
ZeroMQ hub, and the witness, outside the group, gets everything as in the core modes.

- **At most once**: over every life of every member, a message (sender, channel,
  sequence) was handed to one member life, once.
- **Order** per sender and channel within each member's life, and no ``missed`` at a
  member (it sees its share alone): ``checker._check_life``.
- **Accounted**: a message of a publisher life no member was handed is either lost
  for the witness too (lost before the hub split the stream: the witness's own check
  accounts for it), or must be covered by what the hubs counted. The hub holding a
  group counts ``group_lost`` (what members had in flight as they left, what waited
  for a group all of whose members left) and ``unrouted``/``dropped``; a hub that died
  or was taken over took with it what it had not yet counted: at most what waited
  (``group_waiting``) and each member's window (``WINDOW`` + ``PIECE``). So, summed
  over the publisher lives that held a hub, the counts as last written while it held
  it (``group_lost`` goes down as a member that left joins again), ``group_waiting``
  and ``group_members`` at their highest::

      given the witness, lost to the group  <=  group_lost + unrouted + dropped
          + sum over hubs ended other than by stop() of
            (group_waiting + group_members * (WINDOW + PIECE))

- **Bounded by the kills**: a member killed with N in flight loses at most N, and N is
  at most its window: ``group_lost`` <= (member lives killed + members of hubs that
  were taken over) * (WINDOW + PIECE) + what waited.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .checker import PublisherLife, Report, Stream, SubscriberLife

WINDOW = 1000  # the hub's credit window: messages in flight to one member (docs/design.md)
PIECE = 64  # a share may pass the window by one piece of a run, at most this many


def check_group(
    shares: list[tuple[SubscriberLife, dict[Stream, list[int]]]],
    witnessed: list[dict[Stream, list[int]]],
    publishers: list[PublisherLife],
    report: Report,
) -> None:
    delivered = _at_most_once(shares, report)
    seen: dict[Stream, set[int]] = defaultdict(set)
    for streams in witnessed:
        for stream, sequences in streams.items():
            seen[stream].update(sequences)
    lost_to_group = lost_to_all = 0
    for publisher in publishers:
        for channel, published in publisher.accepted.items():
            stream = (publisher.name, publisher.life, channel)
            got, witness = delivered.get(stream, set()), seen.get(stream, set())
            if publisher.done is not None:
                top = published
                if got and max(got) > published:
                    report.violate(f"group: {_name(stream)}: #{max(got) - 1} was never put")
            else:  # killed: what never left the process is in flight at the kill
                top = max(max(got, default=0), max(witness, default=0))
            report.figures["published_to_group"] += top
            for sequence in range(1, top + 1):
                if sequence not in got:
                    if sequence in witness:
                        lost_to_group += 1
                    else:
                        lost_to_all += 1
    hubs = [p for p in publishers if p.held_hub]
    counted = sum(p.hub["group_lost"] + p.hub["unrouted"] + p.hub["dropped"] for p in hubs)
    ended = [p for p in hubs if p.done is None or not p.holds_hub_at_end]
    share = WINDOW + PIECE
    uncounted_room = sum(p.hub["group_waiting"] + p.hub["group_members"] * share for p in ended)
    figures = report.figures
    figures["group_lost_counted"] += sum(p.hub["group_lost"] for p in hubs)
    figures["group_lost_given_witness"] += lost_to_group
    figures["group_lost_with_witness"] += lost_to_all
    figures["hubs_ended_uncleanly"] += len(ended)
    if lost_to_group > counted + uncounted_room:
        figures["group_lost_uncounted"] += lost_to_group - counted - uncounted_room
        report.violate(
            f"group: {lost_to_group} messages the witness got reached no member; the hubs "
            f"counted {counted} and took at most {uncounted_room} uncounted as they ended"
        )
    killed = sum(1 for life, _ in shares if not life.done)
    taken_over = [p for p in hubs if p.done is not None and not p.holds_hub_at_end]
    room = (killed + sum(p.hub["group_members"] for p in taken_over)) * share
    room += sum(p.hub["group_waiting"] for p in hubs)
    figures["member_lives_killed"] += killed
    if figures["group_lost_counted"] > room:
        report.violate(
            f"group: the hubs counted {figures['group_lost_counted']} lost, more than "
            f"{killed} killed member lives can have held ({room})"
        )


def _at_most_once(
    shares: list[tuple[SubscriberLife, dict[Stream, list[int]]]], report: Report
) -> dict[Stream, set[int]]:
    """What the group was handed, per stream; a message handed to two member lives is a
    violation (one life's twice is ``_check_life``'s)."""
    holder: dict[tuple[Stream, int], str] = {}
    delivered: dict[Stream, set[int]] = defaultdict(set)
    for life, streams in shares:
        where = f"member {life.index} life {life.life}"
        for stream, sequences in streams.items():
            for sequence in sequences:
                first = holder.setdefault((stream, sequence), where)
                if first != where:
                    report.figures["group_twice"] += 1
                    report.violate(
                        f"group: {_name(stream)} #{sequence - 1} handed to {first} and {where}"
                    )
            delivered[stream].update(sequences)
    return delivered


def _name(stream: Stream) -> str:
    name, life, channel = stream
    return f"{name}/{life} on {channel}"
