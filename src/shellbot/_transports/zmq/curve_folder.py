"""The hub's folder of authorized keys (``bus.curve.authorized``), and its guard.

The folder is read file by file: a file that does not read as a public
certificate is skipped with a warning that names it and says why, and the
others still count. It is read again when it changed (the names, sizes and
times of its entries differ): at a handshake, as before, and by the guard,
which looks at it every LOOK_INTERVAL.

A key removed from the folder must lose the connections it already has: the ZAP
handler is asked only at a handshake, and libzmq has no call to drop one peer of a
bound socket. The guard learns each accepted connection's descriptor from socket
monitors, and shuts down those to cut; the clients reconnect through the
handshake, where a removed key is refused. The listening sockets stay bound: no
other process can take the ports meanwhile. See docs/design.md ("CURVE: the
authorized folder").
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils import z85

from .handover import InboundConnections

log = logging.getLogger("shellbot.bus")

LOOK_INTERVAL = 0.25  # seconds between the guard's looks at the folder
# A removal is acted on once the folder has not changed for this long: a key file
# rewritten in place (emptied, then written) is not taken for a removal.
SETTLE = 0.5
_LARGEST_CERTIFICATE = 64 * 1024  # a certificate is about 300 bytes; more is not one


def read_keys(folder: str) -> tuple[set[bytes], list[str]]:
    """The public keys of the folder's ``NAME.key`` files, and for each entry skipped a
    line naming it and saying why. Hidden entries (editors' and keygen's work files)
    are passed over in silence."""
    keys: set[bytes] = set()
    skipped: list[str] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError as error:
        return keys, [
            f"{folder} cannot be read ({error.strerror}): no key is accepted but the "
            "hub's own process's"
        ]
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        key, why = _public_key(path, name)
        if key is None:
            skipped.append(f"{path} skipped: {why}; the folder's other keys are accepted")
        else:
            keys.add(key)
    return keys, skipped


def _public_key(path: str, name: str) -> tuple[bytes | None, str]:
    """The public key that ``path`` holds, or None and why it holds none."""
    if name.endswith(".key_secret"):
        return None, (
            "a secret certificate has no place here (it stays on its own machine): "
            "copy its public one, NAME.key, instead"
        )
    if not name.endswith(".key"):
        return None, "not named NAME.key; the folder's public certificates are NAME.key files"
    try:
        # Non-blocking: a FIFO given this name must not stop the hub's handshakes.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            return None, "a folder, not a certificate"
        if not stat.S_ISREG(mode):
            return None, "not a regular file"
        data = os.read(descriptor, _LARGEST_CERTIFICATE + 1)
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    finally:
        os.close(descriptor)
    if not data.strip():
        return None, "empty"
    if len(data) > _LARGEST_CERTIFICATE:
        return None, f"larger than {_LARGEST_CERTIFICATE} bytes: not a certificate"
    public, secret = _certificate_lines(data)
    if secret is not None:
        return None, (
            "holds a secret key: copy the public certificate (NAME.key, written by "
            "`shellbot-bus keygen`) here, and keep the secret one on its own machine"
        )
    if public is None:
        return (
            None,
            "no public-key line: not a ZeroMQ certificate (`shellbot-bus keygen` writes them)",
        )
    try:
        valid = len(z85.decode(public)) == 32
    except (ValueError, KeyError, IndexError):
        valid = False
    if not valid:
        return None, "its public-key is not a CURVE key (40 characters of Z85)"
    return public, ""


def _certificate_lines(data: bytes) -> tuple[bytes | None, bytes | None]:
    """The public and secret keys of a certificate's text, read as
    ``zmq.auth.load_certificate`` reads them."""
    public = secret = None
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"#"):
            continue
        if line.startswith(b"public-key"):
            public = line.split(b"=", 1)[-1].strip(b" \t'\"")
        elif line.startswith(b"secret-key"):
            secret = line.split(b"=", 1)[-1].strip(b" \t'\"")
    return public, secret


class Authorized:
    """The keys of the authorized folder, read again once it changed; the ZAP handler's
    callback. Remembers the keys it let in, to know when a removal must cut."""

    def __init__(self, folder: str, own: bytes | None) -> None:
        self._folder = folder
        self._own = own
        self._seen: Any = None
        self._keys: set[bytes] = set()
        self._admitted: set[bytes] = set()  # let in by a handshake, and still in the folder
        self._removed: set[bytes] = set()  # admitted once, since removed: connections to cut
        self._changed_at = 0.0
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        with self._lock:
            self._refresh()
            if self._own is not None and key == self._own:
                return True
            if key not in self._keys:
                return False
            self._admitted.add(key)
            self._removed.discard(key)
            return True

    def removed(self) -> frozenset[bytes]:
        """Once, the keys that had been let in and are gone from the folder, when it has
        been still for SETTLE: their connections are to be cut. Else nothing."""
        with self._lock:
            self._refresh()
            if not self._removed or time.monotonic() - self._changed_at < SETTLE:
                return frozenset()
            removed = frozenset(self._removed)
            self._removed.clear()
            return removed

    def _refresh(self) -> None:
        seen = self._signature()
        if seen == self._seen:
            return
        self._seen = seen
        self._changed_at = time.monotonic()
        self._keys, skipped = read_keys(self._folder)
        for line in skipped:
            log.warning("CURVE: bus.curve.authorized %s", line)
        gone = self._admitted - self._keys
        self._admitted -= gone
        self._removed = (self._removed | gone) - self._keys

    def _signature(self) -> Any:
        try:
            with os.scandir(self._folder) as entries:
                return sorted(_entry_signature(entry) for entry in entries)
        except OSError as error:
            return error.errno


def _entry_signature(entry: os.DirEntry[str]) -> tuple[Any, ...]:
    try:
        status = entry.stat()
    except OSError as error:  # a dangling link, say
        return (entry.name, error.errno)
    return (entry.name, status.st_mtime_ns, status.st_size, status.st_mode, status.st_ino)


_WATCHED = (
    zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_MONITOR_STOPPED
)
# A publisher's connection is first closed for writing only: the hub still takes what
# is on its way, the client drops the connection on its own and sends the rest again
# after reconnecting. One still open GRACE later is cut both ways.
GRACE = 0.5
_names = itertools.count()


class Guard:
    """A thread that looks at the folder and, after a removal, cuts connections of the
    hub's sockets: on the subscriber side those of the keys removed (and of peers whose
    key it does not know), on the inbound side all of them, since messages do not say
    which key sent them (publishers keep their queue while they reconnect). Made before
    the sockets bind: their monitors must report every connection. It ends once the
    sockets are closed."""

    def __init__(self, sockets: list[zmq.Socket], authorized: Authorized) -> None:
        self._authorized = authorized
        # The inbound side's connections come from the hub's own watch of them (libzmq
        # gives a socket one monitor, and the hub's clean stop needs it): ``inbound``.
        self._monitors = {
            # A name of its own: pyzmq's default one is made of a descriptor, reused.
            hub_socket.get_monitor_socket(_WATCHED, f"inproc://shellbot-guard-{next(_names)}"): True
            for hub_socket in sockets
            if hub_socket.type == zmq.XPUB
        }
        self.inbound: InboundConnections | None = None  # set by the hub once it made it
        # descriptor -> (on the subscriber side, the local port, the connection's number)
        self._connections: dict[int, tuple[bool, int, int]] = {}
        self._serials = itertools.count()
        # Subscribers' connections: descriptor -> (key, when the hub's previous reading of
        # subscriptions ended), from the hub's thread; and when a connection on that
        # descriptor ended. A frame may be read after its connection ended and another
        # took its descriptor: a key is trusted only if the hub had read every
        # subscription once since the descriptor's last connection ended.
        self._keys: dict[int, tuple[bytes, float]] = {}
        self._ended: dict[int, float] = {}
        self.read_at = 0.0  # when the hub last read every subscription queued
        # (when, the publishers' connections cut for writing then): cut both ways after GRACE
        self._hard_cuts: list[tuple[float, list[tuple[int, int]]]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shellbot-curve-guard", daemon=True)
        self._thread.start()

    def take_subscriptions(self, xpub: zmq.Socket, take: Callable[[bytes], None]) -> None:
        """From the hub's thread: hands ``take`` every (un)subscription queued, and notes
        which key holds the connection each came by (ZeroMQ's metadata: its descriptor,
        and the ZAP handler's user id, the z85 public key)."""
        previous = self.read_at
        try:
            while True:
                frame = xpub.recv(zmq.NOBLOCK, copy=False)
                take(frame.bytes)
                try:
                    descriptor, key = frame.get(zmq.SRCFD), frame.get("User-Id")
                except zmq.ZMQError:  # made by the socket itself (a peer gone): no metadata
                    continue
                if isinstance(descriptor, int) and descriptor >= 0 and isinstance(key, str):
                    self._keys[descriptor] = (key.encode("ascii"), previous)
        except zmq.Again:
            self.read_at = time.monotonic()

    def _key_of(self, descriptor: int) -> bytes | None:
        """The key of the subscriber's connection on ``descriptor``, when it is sure."""
        noted = self._keys.get(descriptor)
        if noted is None or noted[1] <= self._ended.get(descriptor, -1.0):
            return None
        return noted[0]

    def stop(self) -> None:
        """No more cuts. The thread ends once the monitors report that the sockets are
        gone: libzmq's I/O thread waits while it cannot hand a monitor its event, so a
        monitor is read until its last event (closing it first stalls every socket)."""
        self._stopping.set()

    def _run(self) -> None:
        from zmq.utils.monitor import parse_monitor_message

        poller = zmq.Poller()
        for monitor in self._monitors:
            poller.register(monitor, zmq.POLLIN)
        live = len(self._monitors)
        next_look = time.monotonic() + LOOK_INTERVAL
        try:
            while live:
                wait = max(0.0, next_look - time.monotonic())
                for monitor, _ in poller.poll(int(wait * 1000) + 1):
                    event = parse_monitor_message(monitor.recv_multipart())
                    if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                        poller.unregister(monitor)
                        live -= 1
                    else:
                        self._take(self._monitors[monitor], event)
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + LOOK_INTERVAL
                    if not self._stopping.is_set():
                        self._look()
        except zmq.ZMQError:  # the context is being terminated
            pass
        finally:
            for monitor in self._monitors:
                monitor.close(linger=0)

    def _take(self, subscriber_side: bool, event: Any) -> None:
        descriptor = event["value"]
        if event["event"] == zmq.EVENT_ACCEPTED:
            port = event["endpoint"].rpartition(b":")[2]
            if port.isdigit():
                serial = next(self._serials)
                self._connections[descriptor] = (subscriber_side, int(port), serial)
        else:  # disconnected or closed: that descriptor may soon be another file's
            self._connections.pop(descriptor, None)
            self._keys.pop(descriptor, None)
            self._ended[descriptor] = time.monotonic()

    def _look(self) -> None:
        now = time.monotonic()
        while self._hard_cuts and self._hard_cuts[0][0] <= now:
            _, connections = self._hard_cuts.pop(0)
            if self.inbound is not None:
                self.inbound.cut(connections, socket.SHUT_RDWR)
        removed = self._authorized.removed()
        if removed:
            self._cut(removed)

    def _cut(self, removed: frozenset[bytes]) -> None:
        subscribers = publishers = 0
        for descriptor, (_, port, _) in list(self._connections.items()):
            key = self._key_of(descriptor)
            if key is None or key in removed:
                subscribers += _shut(descriptor, port, socket.SHUT_RDWR)
        if self.inbound is not None:
            connections = self.inbound.connections()
            publishers = self.inbound.cut(connections, socket.SHUT_WR)
            self._hard_cuts.append((time.monotonic() + GRACE, connections))
        log.warning(
            "CURVE: %d keys removed from bus.curve.authorized: cut %d connections of their "
            "subscribers, and all %d of publishers (whose keys the hub cannot tell); those "
            "still authorized reconnect through the handshake",
            len(removed),
            subscribers,
            publishers,
        )


def _shut(descriptor: int, port: int, how: int) -> bool:
    """Shuts the connection down (libzmq then drops it), once it is sure that the
    descriptor is still a connection accepted on ``port``: not a file that took the
    number since."""
    try:
        copy = os.dup(descriptor)
    except OSError:
        return False
    try:
        connection = socket.socket(fileno=copy)
    except OSError:  # not a socket
        os.close(copy)
        return False
    try:
        with connection:
            if connection.getsockname()[1] != port:
                return False
            connection.getpeername()  # a listening socket has no peer
            connection.shutdown(how)
            return True
    except OSError:
        return False
