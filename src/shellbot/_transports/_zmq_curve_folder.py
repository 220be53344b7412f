"""The hub's folder of authorized keys (``bus.curve.authorized``), and its guard.

The folder is read file by file: a file that does not read as a public
certificate is skipped with a warning that names it and says why, and the
others still count. It is read again when it changed (the names, sizes and
times of its entries differ): at a handshake, as before, and by the guard,
which looks at it every LOOK_INTERVAL.

A key removed from the folder must lose the connections it already has: the ZAP
handler is asked only at a handshake. libzmq does not say which connection
holds which key, so the guard cuts every connection the hub accepted (it learns
their descriptors from socket monitors) and the clients reconnect through the
handshake, where the removed key is refused. The listening sockets stay bound:
no other process can take the ports meanwhile. See docs/design.md ("A key
removed from the authorized folder").
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import stat
import threading
import time
from typing import Any

import zmq
from zmq.utils import z85

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
        return keys, [f"{folder} cannot be read ({error.strerror}): no key is accepted"]
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        key, why = _public_key(path, name)
        if key is None:
            skipped.append(f"{path} skipped: {why}")
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

    def cut_due(self) -> bool:
        """True, once, when keys that had been let in are gone from the folder and it
        has been still for SETTLE: their connections are to be cut."""
        with self._lock:
            self._refresh()
            if not self._removed or time.monotonic() - self._changed_at < SETTLE:
                return False
            self._removed.clear()
            return True

    def _refresh(self) -> None:
        seen = self._signature()
        if seen == self._seen:
            return
        self._seen = seen
        self._changed_at = time.monotonic()
        self._keys, skipped = read_keys(self._folder)
        for line in skipped:
            log.warning("CURVE: bus.curve.authorized %s; the other keys are accepted", line)
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


_names = itertools.count()


class Guard:
    """A thread that looks at the folder and, after a removal, cuts the connections
    the hub's sockets accepted. Made before the sockets bind (their monitors must see
    every connection); it ends once the sockets are closed."""

    def __init__(self, sockets: list[zmq.Socket], authorized: Authorized) -> None:
        self._authorized = authorized
        self._monitors = [
            # A name of its own: pyzmq's default one is made of a descriptor, reused.
            hub_socket.get_monitor_socket(_WATCHED, f"inproc://shellbot-guard-{next(_names)}")
            for hub_socket in sockets
        ]
        self._connections: dict[int, int] = {}  # descriptor -> the local port it was accepted on
        self._stopping = threading.Event()
        self.cuts = 0  # connections cut, for tests and logs
        self._thread = threading.Thread(target=self._run, name="shellbot-curve-guard", daemon=True)
        self._thread.start()

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
                        self._take(event["event"], event["value"], event["endpoint"])
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + LOOK_INTERVAL
                    if not self._stopping.is_set() and self._authorized.cut_due():
                        self._cut()
        except zmq.ZMQError:  # the context is being terminated
            pass
        finally:
            for monitor in self._monitors:
                monitor.close(linger=0)

    def _take(self, event: int, descriptor: int, endpoint: bytes) -> None:
        if event == zmq.EVENT_ACCEPTED:
            port = endpoint.rpartition(b":")[2]
            if port.isdigit():
                self._connections[descriptor] = int(port)
        else:  # disconnected or closed: that descriptor may soon be another file's
            self._connections.pop(descriptor, None)

    def _cut(self) -> None:
        cut = 0
        for descriptor, port in list(self._connections.items()):
            if _shut(descriptor, port):
                cut += 1
        self.cuts += cut
        log.warning(
            "CURVE: keys were removed from bus.curve.authorized: %d connections to the hub "
            "cut; the clients still authorized reconnect through the handshake",
            cut,
        )


def _shut(descriptor: int, port: int) -> bool:
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
            connection.shutdown(socket.SHUT_RDWR)
            return True
    except OSError:
        return False
