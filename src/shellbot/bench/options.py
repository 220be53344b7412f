"""The options of a run, checked before anything runs, as one frozen ``Plan``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .harness import ANCHOR, CURVE, OURS
from .workloads import FULL, QUICK, WORKLOADS, Sizes, Workload

TRANSPORTS = ("zmq", "nats")
CURVE_WORKLOADS = ("T1", "T2")  # --curve runs these a third time per round, secured


class UsageError(ValueError):
    """Options that do not make a run (exit code 2), said before any workload runs."""


@dataclass(frozen=True)
class Plan:
    """What one run of the benchmark does: its workloads, where, how big."""

    keys: tuple[str, ...]
    transport: str = "zmq"
    quick: bool = False
    json_file: str | None = None
    nats_url: str | None = None  # a server of the user's; None: one of the benchmark's own
    curve: bool = False  # T1 and T2 also on a bus secured with CURVE (ZeroMQ only)
    nats_sync: str | None = None  # JetStream's sync_interval on the benchmark's server

    @classmethod
    def from_options(
        cls,
        quick: bool = False,
        json_file: str | None = None,
        only: list[str] | None = None,
        transport: str | None = None,
        nats_url: str | None = None,
        curve: bool = False,
        nats_sync: str | None = None,
    ) -> Plan:
        """The plan of these options, or ``UsageError`` for the first that is wrong."""
        spelled = {key.upper(): key for key in WORKLOADS}  # t1, T1D: any case
        keys = [spelled.get(key.strip().upper(), key.strip()) for key in only] if only else []
        unknown = [key for key in keys if key not in WORKLOADS]
        if unknown:
            raise UsageError(
                f"Unknown workload {', '.join(unknown)}: choose among {', '.join(WORKLOADS)}"
            )
        transport = transport or ("nats" if nats_url else "zmq")
        if transport not in TRANSPORTS:
            raise UsageError(f"Unknown transport {transport!r}: choose zmq or nats")
        if not keys:
            keys = [key for key in WORKLOADS if transport == "nats" or not WORKLOADS[key].nats_only]
        only_on_nats = [key for key in keys if WORKLOADS[key].nats_only]
        if only_on_nats and transport != "nats":
            raise UsageError(
                f"{', '.join(only_on_nats)} measures NATS JetStream: it runs with --transport nats"
            )
        if nats_url and transport != "nats":
            raise UsageError("--nats-url names a NATS server: it goes with --transport nats")
        if nats_sync and (nats_url or not only_on_nats):
            raise UsageError(
                "--nats-sync sets the store of the benchmark's own nats-server: it goes "
                "with T1d and without --nats-url"
            )
        if curve and transport != "zmq":
            raise UsageError("--curve secures the ZeroMQ bus: it goes with --transport zmq")
        if json_file and (unwritable := _unwritable(json_file)):
            raise UsageError(f"--json {json_file}: {unwritable}")  # told now, not after the run
        if nats_url and (problem := _one_nats_server(nats_url)):
            raise UsageError(f"--nats-url: {problem}")
        return cls(tuple(keys), transport, quick, json_file, nats_url, curve, nats_sync)

    @property
    def sizes(self) -> Sizes:
        return QUICK if self.quick else FULL

    @property
    def jetstream(self) -> bool:
        """Whether a workload of the plan needs JetStream on the server."""
        return any(WORKLOADS[key].nats_only for key in self.keys)

    def runs(self) -> list[tuple[Workload, int, str]]:
        """The runs in their order: (workload, round, side).

        Round by round: each round runs every repeated workload once per side, anchor
        first, so each best is drawn from the whole run rather than from a minute of
        it (a shared machine's speed drifts, T4 is judged against T1 and T5 shown
        against it). With ``curve``, T1 and T2 run a third time per round, secured.
        """
        repeated = [key for key in self.keys if WORKLOADS[key].repeated]
        once = [key for key in self.keys if not WORKLOADS[key].repeated]

        def sides(key: str) -> tuple[str, ...]:
            if self.curve and key in CURVE_WORKLOADS:
                return (ANCHOR, OURS, CURVE)
            return (ANCHOR, OURS)

        return [
            (WORKLOADS[key], round_, side)
            for round_ in range(self.sizes.rounds)
            for key in repeated
            for side in sides(key)
        ] + [(WORKLOADS[key], 0, side) for key in once for side in (ANCHOR, OURS)]


def _unwritable(path: str) -> str | None:
    """Why the report could not be written at ``path``, or None."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return "is a folder; name a file"
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (
        os.path.exists(target) and not os.access(target, os.W_OK)
    ):
        return "cannot be written here"
    return None


def _one_nats_server(url: str) -> str | None:
    """Why ``url`` is not one NATS server's URL, or None."""
    from .._settings import nats_servers

    try:
        servers = nats_servers(url)
    except ValueError as error:
        return str(error).replace(f"bus.address {url!r}: ", "", 1)
    if len(servers) != 1:
        # The anchor's readiness (subscribe, then flush) holds on one server only.
        return (
            f"{url!r} names {len(servers)} servers: give one (on a cluster, a subscription "
            "reaches the other nodes later than the anchor's flush tells)"
        )
    return None
