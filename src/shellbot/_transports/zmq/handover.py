"""A stopping hub's inbound side: publishers' connections ended without losing what they sent.

ZeroMQ's PUSH/PULL carries no acknowledgement. When the hub closes its PULL socket,
whatever a publisher had written into the connection (its kernel's send buffer, the
wire, the hub's receive buffer, and what it writes before it notices the close) is
lost, and its PUSH socket never knows. Messages still queued in the PUSH socket are
kept for the next hub; only those already on their way are gone.

So a hub that stops cleanly does not close first. It stops taking new connections, then
shuts down the writing half of each inbound connection (``shutdown(SHUT_WR)`` on the
connection's descriptor, which a monitor of the PULL socket reports): the publisher's
libzmq reads end-of-stream, stops writing into that connection and closes it, and its
kernel delivers everything it had accepted before the closing handshake. The hub keeps
reading until every connection has ended, and only then closes. libzmq keeps reading a
connection whose writing half fails (only a read error ends it), so the hub's own
heartbeats cannot cut that short.

New connections: libzmq's listener owns the connections it accepted (unbinding it ends
them all), so it stays bound until the end, and a publisher that ended its connection
reconnects 20 ms later. Were it accepted, it could send there while its first
connection is still being read, and the hub would interleave the two. So the listener
is given a socket filter that drops every packet (``SO_ATTACH_FILTER``, Linux, tcp://): a
connection attempt then starts again after ``endpoints.CONNECT_TIMEOUT_MS`` and reaches the
next hub (or finds the port free and retries). Where no filter applies (ipc://, other
systems), a new connection is shut down as soon as it is accepted, and waited for too.

What stays out of reach: a message that a publisher's libzmq had taken from its socket's
queue but not yet written to its kernel when the end-of-stream reached it. That only
happens when its kernel buffer was full, that is, when the hub was not keeping up.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import socket as net
import struct
from collections.abc import Iterator

import zmq

_EVENTS = zmq.EVENT_LISTENING | zmq.EVENT_CLOSED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
_EVENT = struct.Struct("=HI")  # a monitor event's first frame: its id and its value (a fd)
_SO_ATTACH_FILTER = 26  # Linux's <asm-generic/socket.h>
# A classic BPF program of one instruction, BPF_RET|BPF_K 0: keep nothing of any packet.
_DROP_ALL = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0))


class InboundConnections:
    """The live connections of a hub's PULL socket, watched from before it binds."""

    def __init__(self, pull: zmq.Socket, address: str) -> None:
        self._pull = pull
        self._local = _local_address(address)
        self.monitor: zmq.Socket = pull.get_monitor_socket(_EVENTS)
        # descriptor -> the number of its connection, for those accepted and not yet ended
        # (a descriptor is reused at once: the number tells one connection from the next)
        self._live: dict[int, int] = {}
        self._numbers = itertools.count()
        self._listening: set[int] = set()  # descriptors of the listener (one per bind)
        self._ending = False

    @property
    def open(self) -> int:
        """How many connections are still up, as far as the events taken so far say."""
        return len(self._live)

    def take_events(self) -> None:
        """Takes what the monitor reported; once ending, shuts down each new connection."""
        monitor = self.monitor
        with contextlib.suppress(zmq.Again):
            while True:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
                if len(frames) != 2 or len(frames[0]) != _EVENT.size:
                    continue
                event, descriptor = _EVENT.unpack(frames[0])
                if event == zmq.EVENT_LISTENING:
                    self._listening.add(descriptor)
                elif event == zmq.EVENT_CLOSED:  # a listener closed (unbound)
                    self._listening.discard(descriptor)
                elif event == zmq.EVENT_ACCEPTED:
                    self._live[descriptor] = next(self._numbers)
                    if self._ending:
                        self._shut_down(descriptor)
                elif event == zmq.EVENT_DISCONNECTED:
                    self._live.pop(descriptor, None)

    def end_all(self) -> None:
        """Takes no new connection, and asks every publisher to end its own: each one
        delivers what it sent before it ends."""
        self._ending = True
        self.take_events()  # up to date first: a descriptor that ended may be reused
        for descriptor in self._listening:
            with self._ours(descriptor, listening=True) as listener:
                if listener is not None:
                    _refuse_packets(listener)
        for descriptor in list(self._live):
            self._shut_down(descriptor)

    def connections(self) -> list[tuple[int, int]]:
        """The live connections, (descriptor, number), as the hub's thread last took them
        (other threads may ask: the copy is made at once, under the interpreter's lock)."""
        return list(self._live.items())

    def cut(self, connections: list[tuple[int, int]], how: int) -> int:
        """Shuts down (``how``: ``SHUT_WR``, ``SHUT_RDWR``) each of ``connections`` still
        live as the same connection; returns how many. Safe from another thread: it
        only reads, and acts on a duplicate of a descriptor still ours."""
        done = 0
        for descriptor, number in connections:
            if self._live.get(descriptor) != number:
                continue
            with self._ours(descriptor, listening=False) as connection:
                if connection is not None:
                    with contextlib.suppress(OSError):  # ended meanwhile
                        connection.shutdown(how)
                        done += 1
        return done

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._pull.disable_monitor()
        self.monitor.close(linger=0)

    def _shut_down(self, descriptor: int) -> None:
        """Shuts down the writing half of the connection behind ``descriptor``."""
        with self._ours(descriptor, listening=False) as connection:
            if connection is None:
                self._live.pop(descriptor, None)  # ended meanwhile: its event is on its way
                return
            with contextlib.suppress(OSError):  # ended meanwhile
                connection.shutdown(net.SHUT_WR)

    @contextlib.contextmanager
    def _ours(self, descriptor: int, listening: bool) -> Iterator[net.socket | None]:
        """A duplicate of ``descriptor`` while it still is what we took it for (a listener,
        or a connection, on the inbound side's local address: a descriptor that ended may
        be reused), else None. libzmq keeps owning the socket: closing the duplicate
        leaves it open."""
        try:
            duplicate = net.socket(fileno=os.dup(descriptor))
        except OSError:
            yield None
            return
        try:
            try:
                accepting = duplicate.getsockopt(net.SOL_SOCKET, net.SO_ACCEPTCONN) == 1
                ours = accepting == listening and _normal(duplicate.getsockname()) == self._local
            except OSError:
                ours = False
            yield duplicate if ours else None
        finally:
            duplicate.close()


def _refuse_packets(listener: net.socket) -> None:
    """Makes the kernel drop whatever reaches ``listener`` from now on: new connections'
    SYNs (established connections have sockets of their own). Linux only; elsewhere
    the hub shuts new connections down once accepted instead."""
    program = struct.pack("@HP", 1, ctypes.addressof(_DROP_ALL))  # struct sock_fprog
    with contextlib.suppress(OSError):
        listener.setsockopt(net.SOL_SOCKET, _SO_ATTACH_FILTER, program)


def _local_address(address: str) -> object:
    """What ``getsockname()`` shows on a connection accepted at ``address`` (tcp, ipc)."""
    scheme, rest = address.split("://", 1)
    if scheme == "ipc":  # an abstract name, ipc://@name, reads as a NUL then the name
        return "\0" + rest[1:] if rest.startswith("@") else rest
    # The host may be a wildcard or a name: the port alone tells the inbound side apart.
    return int(rest.rpartition(":")[2])


def _normal(name: object) -> object:
    if isinstance(name, tuple):  # tcp: (host, port[, flow, scope])
        return name[1]
    if isinstance(name, bytes):
        return name.decode("utf-8", "surrogateescape")
    return name


def watched(scheme: str) -> bool:
    """Whether a hub on ``scheme`` has connections to end (inproc:// has no descriptors)."""
    return scheme in ("tcp", "ipc")
