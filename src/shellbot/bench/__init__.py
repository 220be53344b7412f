"""The bus against bare pyzmq (or, on NATS, bare nats-py), on this machine, in one run.

``python -m shellbot.bench [--quick] [--json FILE] [--only T1,T2] [--transport nats]`` (also
``shellbot-bus bench``) runs each workload in fresh processes over TCP loopback,
on free ports, once with the bus ("ours") and once with the anchor, a bare
pyzmq program written here for the same job (one PUB bound by the publisher,
SUB sockets connected, the channel as the first frame, orjson each way, and no
send before the subscriptions are in). Sides alternate, anchor first, so both
see the same machine; the table gives ours, the anchor and the ratio.

Workloads (full run; ``--quick`` shrinks them to a smoke run of seconds):

- T1 throughput: one publisher, one subscriber, one channel, 500,000 messages.
- T2 latency: ping-pong between two processes, each on its own channel, 10,000 round trips.
- T3 fan-out: one publisher, 8 subscribers of its channel, 100,000 messages.
- T4 fan-in: 8 spawned publishers, each on its own channel, one subscriber of the 8.
- T5 many channels: one subscriber of 10,000 channels, the publisher cycling over them.
- T6 memory: 1,000,000 messages while one subscriber is stopped (SIGSTOP) and another
  keeps up; then the stopped one reads again and a last message shows it its gap.
- T7 idle cost: a started publisher and a subscriber blocked in ``get``, 10 s of silence.
- T8 request/reply: one requester and one responder, 10,000 sequential requests (p50,
  p99, requests/s), then 8 requesters at once (requests/s); the anchor is a bare REQ/REP
  pair on ZeroMQ, ``nc.request()`` and a callback responder on NATS
  (``workloads.requests``).
- T9 work queue: one publisher, a queue group of 8 member processes, 200,000 messages:
  deliveries/s against our T1, the largest share over the smallest, lost and twice; the
  anchor is a bare PUSH to 8 PULL sockets on ZeroMQ, queue subscriptions on NATS
  (``workloads.groups``).
- T1d (NATS only) durable T1: a publisher on a durable bus (``bus.durable``) and a durable
  subscriber, 200,000 messages, until all are received and the publisher's ``stop()``
  confirmed all stored; then the latency from ``put()`` to the server's acknowledgement
  in a paced run, 2,000 messages at one a millisecond after 100 not counted
  (``workloads.durable``).

On NATS (``--transport nats``: a nats-server the benchmark starts on free
loopback ports and stops at the end; ``--nats-url nats://HOST:PORT``: a server
of the user's, under subjects of the run's own), ours is the bus on that
server and the anchor a bare nats-py program (``sides.nats``), both on the same
server in the same run. T1, T3, T4 and T1d are judged at 0.9x the anchor or
above, T2's p50 at 1.5x or below; T5 and T1d's latencies are shown against the
anchor for information. The server the benchmark starts has JetStream on when
T1d runs (a store in its temporary folder), with the server's default sync (its
store written to disk every 2 minutes), or ``--nats-sync always`` (each write
synced before it is acknowledged) or another interval.

With ``--curve`` (ZeroMQ only), T1 and T2 also run on a bus secured with CURVE
(``bus.curve.*``, keys made for the run in a temporary folder), in the same rounds,
after the plain bus: the rows "with CURVE" give it against the plain bus of the same
run, judged at 0.7x of plain T1 or above and 1.3x of plain T2's p50 or below.

Exit code: 0 when every run finished, 1 when one failed; targets are reported,
not enforced (figures drift on shared machines: read the ratios).

Where things are: ``options`` (the checked ``Plan``), ``workloads`` (the registry, its
sizes and pooling; T8, T9 and T1d in modules of their own), ``targets`` (every target
as a row of one table), ``report`` (the one summariser reading it, the table, the JSON),
``runner`` (the run), ``harness`` (the crew of processes; flow, ping-pong and idle over
the ``Side`` protocol), ``sides`` (ours, bare pyzmq, bare nats-py), ``payload`` (the
one message), ``network`` (ports, subjects) and ``server`` (the benchmark's nats-server).
"""

from __future__ import annotations

import sys

try:
    import psutil  # noqa: F401 - the workloads measure memory and CPU with it
except ImportError as missing:
    # Installs that work: the name shellbot on PyPI is another project.
    hint = (
        "the benchmark needs psutil: pip install psutil (from a checkout: pip install '.[bench]')"
    )
    if sys.argv[:1] == ["-m"]:  # python -m shellbot.bench, still locating its __main__
        sys.exit(f"shellbot.bench: error: {hint}")
    raise ImportError(hint) from missing

from .options import Plan
from .report import summarize, table, verdicts
from .runner import run
from .server import NatsServer
from .targets import TARGETS, Rule, Target
from .workloads import WORKLOADS, Workload

# The public surface: ``run`` (the command line's), and what the tests read to check
# the plan, the table and the verdicts without a run: the registry, the targets table,
# ``Plan(...).runs()``, ``summarize`` (a workload's rows), ``verdicts`` (the JSON's
# targets), ``table`` (the printed table), and the benchmark's own nats-server.
__all__ = [
    "TARGETS",
    "WORKLOADS",
    "NatsServer",
    "Plan",
    "Rule",
    "Target",
    "Workload",
    "run",
    "summarize",
    "table",
    "verdicts",
]
