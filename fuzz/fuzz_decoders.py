"""Coverage-guided fuzzing of the bus's decoders (atheris), outside the test suite.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_decoders.py -max_total_time=60      # or -runs=100000

Each input is split into a kind and frames: frames decoded by a subscriber (two-frame
messages, runs, bus signals), a batch routed to it, or frames sent to a hub in this
process over a real inproc socket, followed by a mark that must come through. Any
exception other than the bus's own counting, a message that is not JSON, or a hub that
stops forwarding is a crash; libFuzzer then writes the input to crash-*.

Before the first input, the harness checks itself on known inputs: a harness that no
longer fits the subscriber (a renamed private name) exits 2 with a line saying so,
never a crash-* file that would pass for a decoder's crash. The test suite runs it
for a few thousand inputs (tests/test_fuzz.py), so a change cannot break it unseen.
"""

from __future__ import annotations

import itertools
import sys
import time

import atheris

with atheris.instrument_imports(include=["shellbot"]):
    from shellbot import Context
    from shellbot._codec import HEADER
    from shellbot._settings import BusSettings
    from shellbot._transports import transport_for
    from shellbot._transports.zmq.sockets import inbound_address
    from shellbot.bus import Bus

import orjson
import zmq

FRESH_EVERY = 10_000  # inputs before the subscriber is made anew (it keeps state per topic)
MARK_TIMEOUT = 2.0  # seconds the hub has to forward the mark that follows an input


class _Target:
    def __init__(self) -> None:
        self._names = itertools.count()
        context = Context({"bus": {"address": "inproc://shellbot-fuzz-hub"}})
        settings = BusSettings.from_context(context)
        self.hub = transport_for(settings).open_hub()
        assert self.hub is not None
        self.peer = zmq.Context.instance().socket(zmq.PUSH)
        self.peer.setsockopt(zmq.SNDTIMEO, 5000)
        self.peer.connect(inbound_address(settings))
        self.hub_reader = Bus(context).subscribe("mark")
        assert self.hub_reader.wait_ready(5.0)
        self.marks = itertools.count()
        self.inputs = 0
        self.subscriber = self._fresh_subscriber()

    def _fresh_subscriber(self):  # type: ignore[no-untyped-def]
        address = f"inproc://shellbot-fuzz-{next(self._names)}"
        return Bus(Context({"bus": {"address": address}})).subscribe(["", "votes"])

    def decode(self, frames: list[bytes]) -> None:
        subscriber = self.subscriber
        self.inputs += 1
        if self.inputs % FRESH_EVERY == 0:
            subscriber.close()
            subscriber = self.subscriber = self._fresh_subscriber()
        before = subscriber.stats
        taken = subscriber._decoder.take(frames)
        after = subscriber.stats
        if taken != len(subscriber._pending) or after["received"] - before["received"] != taken:
            raise AssertionError(f"{taken} taken, counters {before} -> {after}")
        for _ in range(taken):
            message = subscriber.receive()
            orjson.dumps(message.message)
        subscriber._pending.clear()

    def forward(self, messages: list[list[bytes]]) -> None:
        mark = next(self.marks)
        for frames in messages:
            self.peer.send_multipart(frames)
        self.peer.send_multipart([b"mark\xff", HEADER.pack(1, mark + 1) + b"%d" % mark])
        deadline = time.monotonic() + MARK_TIMEOUT
        while time.monotonic() < deadline:
            if self.hub_reader.get(block=True, timeout=0.2) == mark:
                return
        raise AssertionError(f"the hub stopped forwarding after {messages!r:.300}")


def _frames(data: atheris.FuzzedDataProvider, most: int) -> list[bytes]:
    return [data.ConsumeBytes(data.ConsumeIntInRange(0, 96)) for _ in range(most)]


_target: _Target | None = None


HARNESS_BROKEN = 2  # the exit code of a harness that no longer fits the code it fuzzes


def check_harness() -> None:
    """Runs known inputs of every kind: what fails here is the harness, not a decoder."""
    global _target
    try:
        _target = _Target()
        good = [b"votes\xff", HEADER.pack(7, 1) + b'{"ok": 1}']
        _target.decode(good)
        _target.decode([_target.subscriber._decoder.batch_topic, b""])
        _target.forward([good])
    except Exception as error:
        print(
            f"fuzz_decoders: the harness no longer fits the bus ({type(error).__name__}: "
            f"{error}); mend fuzz/fuzz_decoders.py",
            file=sys.stderr,
        )
        sys.exit(HARNESS_BROKEN)


def test_one_input(raw: bytes) -> None:
    global _target
    if _target is None:
        _target = _Target()
    data = atheris.FuzzedDataProvider(raw)
    kind = data.ConsumeIntInRange(0, 3)
    if kind == 0:
        _target.decode(_frames(data, data.ConsumeIntInRange(0, 3)))
    elif kind == 1:
        topic = _target.subscriber._decoder.batch_topic
        _target.decode([topic, data.ConsumeBytes(data.remaining_bytes())])
    elif kind == 2:
        _target.decode([data.ConsumeBytes(24), data.ConsumeBytes(data.remaining_bytes())])
    else:
        count = data.ConsumeIntInRange(1, 4)
        _target.forward([_frames(data, data.ConsumeIntInRange(1, 3)) for _ in range(count)])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    check_harness()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
