"""A fault harness: a seeded schedule of faults played against a live workload, then a
check of what arrived against what was put.

``python -m shellbot.faults --mode zmq --seed 7`` plays one schedule; the same seed
plays the same schedule again. Modes: ``zmq`` (the embedded hub), ``nats`` (one
node), ``cluster`` (three nodes, each in a network namespace of its own), ``durable``
(JetStream on that cluster, three replicas), ``queue`` (a queue group on the ZeroMQ
hub, a witness beside it). See docs/faults.md for what is injected, what is checked
and the figures of a campaign.
"""

from .runner import run_once
from .schedule import MODES, Fault, Shape, make

__all__ = ["MODES", "Fault", "Shape", "make", "run_once"]
