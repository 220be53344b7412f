"""Linux network namespaces for a 3-node cluster: one namespace a node, joined by veth
links, and a client link from this (the root) namespace to each node.

Addresses are private and used only here: the client links take a /30 each in
10.231.B.0/24, B chosen free in the root namespace for this run; the links between
nodes take 10.232.0.0/24, which exists only inside the run's own namespaces. No route
leads out. Every name starts with ``sbf<pid><run>``; ``Namespaces`` deletes what it
made on exit, failure included, and ``sweep()`` deletes what runs of dead processes
left behind. A partition is a link between two nodes taken down.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from types import TracebackType

PREFIX = "sbf"
PORT = 14222  # inside a namespace of its own no one else listens: fixed ports are safe
MONITOR_PORT = 18222
CLUSTER_PORT = 16222

LOCK = "/tmp/shellbot-faults-netns.lock"

_runs = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not os.path.exists("/proc/self/ns/net"):
        return "this system has no network namespaces"
    name = f"{PREFIX}{os.getpid()}probe"
    try:
        made = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"the ip command cannot run: {error}"
    if made.returncode != 0:
        return f"ip netns add fails (root and CAP_NET_ADMIN needed): {made.stderr.strip()}"
    _ip("netns", "delete", name, check=False)
    return None


def sweep() -> list[str]:
    """Deletes the namespaces of this harness whose process is gone; returns their names."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    deleted = []
    for line in listed:
        name = line.split(" ")[0]
        found = re.fullmatch(rf"{PREFIX}(\d+)r\d+n\d", name)
        if found and not _pid_alive(int(found.group(1))):
            _ip("netns", "delete", name, check=False)
            deleted.append(name)
    return deleted


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_block() -> int:
    """A third octet B such that no address of 10.231.B.0/24 is in the root namespace."""
    used = {int(b) for b in re.findall(r"inet 10\.231\.(\d+)\.", _ip("-4", "addr").stdout)}
    free = [block for block in range(256) if block not in used]
    if not free:
        raise RuntimeError("no free 10.231.B.0/24 block for the client links")
    return random.SystemRandom().choice(free)


@dataclass
class Link:
    """A veth pair between two node namespaces (``a`` < ``b``, node indexes)."""

    a: int
    b: int
    device_a: str
    device_b: str
    address_a: str
    address_b: str
    up: bool = True


@dataclass
class Namespaces:
    """``size`` node namespaces, fully meshed; a context manager."""

    size: int = 3
    # pid_max is 32768 here, interface names at most 15 characters: sbf32767r999l01
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}r{next(_runs) % 1000}")
    names: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # each node's client-link address
    links: dict[tuple[int, int], Link] = field(default_factory=dict)

    def __enter__(self) -> Namespaces:
        try:
            self._make()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.delete()

    def _make(self) -> None:
        # Runs at the same time (other processes) each take a block of their own: the
        # choice and the addresses that take it are made under one lock.
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._make_client_links(_free_block())
        self._make_node_links()

    def _make_client_links(self, block: int) -> None:
        for index in range(self.size):
            name = f"{self.tag}n{index}"
            _ip("netns", "add", name)
            self.names.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            # The client link: root end <tag>c<i>, node end <tag>d<i> inside the namespace.
            root_end, node_end = f"{self.tag}c{index}", f"{self.tag}d{index}"
            _ip("link", "add", root_end, "type", "veth", "peer", "name", node_end)
            _ip("link", "set", node_end, "netns", name)
            base = 4 * index
            _ip("addr", "add", f"10.231.{block}.{base + 1}/30", "dev", root_end)
            _ip("link", "set", root_end, "up")
            host = f"10.231.{block}.{base + 2}"
            _ip("-n", name, "addr", "add", f"{host}/30", "dev", node_end)
            _ip("-n", name, "link", "set", node_end, "up")
            self.hosts.append(host)

    def _make_node_links(self) -> None:
        for number, (a, b) in enumerate(itertools.combinations(range(self.size), 2)):
            device_a, device_b = f"{self.tag}l{a}{b}", f"{self.tag}l{b}{a}"
            _ip("-n", self.names[a], "link", "add", device_a, "type", "veth",
                "peer", "name", device_b, "netns", self.names[b])  # fmt: skip
            address_a, address_b = f"10.232.0.{4 * number + 1}", f"10.232.0.{4 * number + 2}"
            _ip("-n", self.names[a], "addr", "add", f"{address_a}/30", "dev", device_a)
            _ip("-n", self.names[b], "addr", "add", f"{address_b}/30", "dev", device_b)
            _ip("-n", self.names[a], "link", "set", device_a, "up")
            _ip("-n", self.names[b], "link", "set", device_b, "up")
            self.links[(a, b)] = Link(a, b, device_a, device_b, address_a, address_b)

    def address_of(self, node: int, seen_from: int) -> str:
        """``node``'s address on its link with ``seen_from``."""
        link = self.links[(min(node, seen_from), max(node, seen_from))]
        return link.address_a if node == link.a else link.address_b

    def set_link(self, a: int, b: int, up: bool) -> None:
        """Takes the link between nodes ``a`` and ``b`` down (a partition) or up again.
        Both ends: a veth end that is up with its peer down still queues nothing."""
        link = self.links[(min(a, b), max(a, b))]
        state = "up" if up else "down"
        _ip("-n", self.names[link.a], "link", "set", link.device_a, state)
        _ip("-n", self.names[link.b], "link", "set", link.device_b, state)
        link.up = up

    def heal(self) -> None:
        for link in self.links.values():
            if not link.up:
                self.set_link(link.a, link.b, True)

    def delete(self) -> None:
        """Deletes every namespace of this run (their veth ends go with them, and the
        root ends with their peers); the names starting with the tag, leftovers too."""
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        names = {line.split(" ")[0] for line in listed} & {f"{self.tag}n{i}" for i in range(9)}
        for name in sorted(names | set(self.names)):
            _ip("netns", "delete", name, check=False)
        for index in range(self.size):  # a root end whose namespace was never made
            _ip("link", "delete", f"{self.tag}c{index}", check=False)
        self.names.clear()
