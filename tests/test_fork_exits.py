"""A child made by os.fork() ends as programs end, and its parent's bus goes on.

The parent is a program of its own (a child that "falls off the end" must have a
script to fall off): its publisher holds the hub on tcp:// (a client of the server on
nats://), and while it puts 10,000 messages it forks children that end each way that
runs the exit handlers inherited from the parent. Nothing the parent started may be
stopped by them: its publisher's process and the hub keep their pids, and the test's
subscriber gets every message, none missed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import psutil
import pytest
from _nats import NatsNode

from shellbot import Context
from shellbot.bus import Bus

COUNT = 10_000
FROM_CHILD = 100  # what the child that uses the bus puts before it ends

# How each child ends, and the exit code that shows it ended that way.
ENDINGS = {
    "sys.exit": 0,  # SystemExit in the child: the interpreter ends, exit handlers run
    "exception": 1,  # an uncaught exception: a traceback, then the same
    "end of script": 0,  # the child returns to the script, which ends
    "uses the bus": 0,  # puts, then sys.exit(): its own messages leave at its exit
    "multiprocessing fork": 0,  # a multiprocessing.Process (fork) whose target returns
    "handles the publisher": 0,  # is_alive(), terminate(), join() its copy of the publisher
}

PARENT = textwrap.dedent(
    """
    import json, multiprocessing, os, sys
    from shellbot import Context
    from shellbot.bus import Bus

    address, count, endings = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    from_child = int(sys.argv[4])

    def tell(**report):
        print(json.dumps(report), flush=True)

    def end_child(ending):
        \"\"\"In the child: ends the way it is told; returns for "end of script".\"\"\"
        if ending in ("sys.exit", "uses the bus"):
            if ending == "uses the bus":
                own = bus.publish()
                for index in range(from_child):
                    own.put("from-child", index)
            sys.exit(0)
        if ending == "exception":
            raise RuntimeError("a forked child fails (as this test wants)")
        if ending == "handles the publisher":  # the parent's: not this child's to end
            publisher.terminate()
            publisher.join(0.1)
            sys.exit(1 if publisher.is_alive() else 0)

    def main():
        \"\"\"Returns True in a child that is to fall off the end of the script.\"\"\"
        global bus, publisher
        bus = Bus(Context({"bus": {"address": address, "drain_timeout": 0.2}}))
        publisher = bus.publish()
        publisher.start()
        tell(publisher=publisher.pid, holds_hub=publisher.holds_hub)
        sys.stdin.readline()  # the test's subscriber is ready
        forks = {index * (count // len(endings)): e for index, e in enumerate(endings)}
        children, processes = {}, []
        for index in range(count):
            ending = forks.get(index)
            if ending == "multiprocessing fork":
                process = multiprocessing.get_context("fork").Process(target=len, args=("",))
                process.start()
                processes.append(process)
            elif ending is not None:
                pid = os.fork()
                if pid == 0:
                    end_child(ending)
                    return True
                children[ending] = pid
            publisher.put("parent", index)
        ended = {e: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for e, pid in children.items()}
        for process in processes:
            process.join(10.0)
            ended["multiprocessing fork"] = process.exitcode
        # A child that signalled the publisher did so before it ended: the publisher's
        # process would be gone within its switch interval and drain, so look longer.
        publisher.join(1.5)
        publisher.put("parent", "end")  # the hub still forwards
        tell(
            ended=ended,
            pid=publisher.pid,
            alive=publisher.is_alive(),
            exitcode=publisher.exitcode,
            holds_hub=publisher.holds_hub,
        )
        sys.stdin.readline()  # the test looked at who holds the hub
        tell(stopped=publisher.stop(timeout=10.0))
        return False

    if main():
        pass  # a child: the end of the script
    """
)


def hub_holder(address: str) -> int | None:
    """The pid listening on a tcp:// address (its hub), None if none listens."""
    port = int(address.rsplit(":", 1)[1])
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
            return connection.pid
    return None


class Parent:
    """The parent program, spoken to one line at a time."""

    def __init__(self, address: str) -> None:
        arguments = [address, str(COUNT), json.dumps(list(ENDINGS)), str(FROM_CHILD)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", PARENT, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bounded by the parent's own waits
        if not line:
            self.process.wait(10.0)
            assert self.process.stderr is not None
            pytest.fail(f"the parent program ended early:\n{self.process.stderr.read()}")
        return dict(json.loads(line))

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def close(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        _, errors = self.process.communicate(timeout=10.0)
        return errors


@pytest.fixture(params=["tcp", "nats"])
def fork_address(request: pytest.FixtureRequest, tcp_address: str) -> str:
    if request.param == "nats":
        node: NatsNode = request.getfixturevalue("nats_server")
        return str(node.url)
    return tcp_address


def test_forked_children_that_end_stop_nothing_of_their_parent(
    fork_address: str, request: pytest.FixtureRequest
) -> None:
    on_nats = fork_address.startswith("nats://")
    server: NatsNode | None = request.getfixturevalue("nats_server") if on_nats else None

    def hub() -> int | None:  # the pid of what every process on the address relies on
        return server.process.pid if server is not None else hub_holder(fork_address)

    parent = Parent(fork_address)
    subscriber = Bus(Context({"bus": {"address": fork_address}})).subscribe(
        ["parent", "from-child"]
    )
    try:
        started = parent.read()
        assert started["holds_hub"] is not on_nats  # on nats:// the server is the hub
        hub_before = hub()
        assert hub_before == (server.process.pid if server is not None else started["publisher"])
        assert subscriber.wait_ready(timeout=10.0)
        parent.go_on()
        got: list[Any] = []
        mine: list[Any] = []
        while len(got) < COUNT + 1 or len(mine) < FROM_CHILD:
            message = subscriber.receive(block=True, timeout=10.0)
            if message is None:
                break
            (got if message.channel == "parent" else mine).append(message.message)
        ran = parent.read()
        assert ran["ended"] == ENDINGS
        assert (ran["pid"], ran["alive"], ran["exitcode"]) == (started["publisher"], True, None)
        assert ran["holds_hub"] is not on_nats
        assert hub() == hub_before  # nothing took over: the same hub, still up
        if server is not None:
            assert server.process.poll() is None
        parent.go_on()
        assert parent.read() == {"stopped": True}
        assert parent.process.wait(10.0) == 0
    finally:
        errors = parent.close()
        subscriber.close()
    assert got == [*range(COUNT), "end"]
    assert mine == list(range(FROM_CHILD))
    assert subscriber.stats["missed"] == 0
    assert "Exception ignored in atexit" not in errors, errors
