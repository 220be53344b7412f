"""What holds a TCP port, asked the way ZeroMQ peers greet each other (ZMTP 3).

A peer that greets as ZeroMQ does, with the NULL mechanism, sends its READY command
at once, and that names its socket type: a hub's outward side is an XPUB socket,
its inbound side a PULL socket, the original shellbot's publisher a PUB socket.
Asked only when a hub could not bind, so that the error says what holds the port.
"""

from __future__ import annotations

import socket
import struct

import psutil

SIGNATURE = b"\xff" + bytes(8) + b"\x7f"
# Our greeting: the signature, version 3.0, the NULL mechanism, not a server, filler.
_GREETING = SIGNATURE + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + bytes(31)
GREETING_SIZE = 64
TIMEOUT = 1.0

NOTHING = "nothing"  # nothing listens there (any more)
FOREIGN = "foreign"  # something that does not greet as ZeroMQ does
SILENT = "silent"  # something that took the connection and said nothing in time
ZEROMQ = "zeromq"  # ZeroMQ, whose type did not come
SECURED = "secured"  # ZeroMQ with a security mechanism (CURVE): it names no type to strangers


def socket_type(host: str, port: int) -> str:
    """``NOTHING``, ``FOREIGN``, ``ZEROMQ``, ``SECURED``, or the ZeroMQ socket type the
    holder of ``host:port`` names in its READY command (``XPUB``, ``PULL``, ``PUB``...)."""
    try:
        with socket.create_connection((host, port), TIMEOUT) as peer:
            peer.settimeout(TIMEOUT)
            # In steps, as ZMTP allows: a peer of another mechanism hangs up on a whole
            # greeting before it says anything, but tells its mechanism in its own.
            peer.sendall(SIGNATURE)
            try:
                signature = _read(peer, len(SIGNATURE))
            except TimeoutError:  # a paused process's kernel still accepts: see holder()
                return SILENT
            if len(signature) < len(SIGNATURE) or not _is_signature(signature):
                return FOREIGN
            peer.sendall(_GREETING[len(SIGNATURE) : len(SIGNATURE) + 1])  # version 3
            rest = _read(peer, GREETING_SIZE - len(SIGNATURE))
            if len(rest) < GREETING_SIZE - len(SIGNATURE):
                return ZEROMQ
            if rest[2:22].rstrip(b"\x00") != b"NULL":
                return SECURED
            peer.sendall(_GREETING[len(SIGNATURE) + 1 :])
            head = _read(peer, 2)
            if len(head) < 2 or head[0] != 0x04:  # a short command frame
                return ZEROMQ
            return _socket_type_of(_read(peer, head[1])) or ZEROMQ
    except ConnectionRefusedError:
        return NOTHING
    except OSError:  # a timeout, a reset: not a ZeroMQ peer that answers
        return FOREIGN


def listener(port: int) -> psutil.Process | None:
    """The local process listening on ``port``, where this process may see it."""
    try:
        for connection in psutil.net_connections(kind="tcp"):
            if (
                connection.status == psutil.CONN_LISTEN
                and connection.laddr
                and connection.laddr.port == port
                and connection.pid
            ):
                return psutil.Process(connection.pid)
    except (psutil.Error, OSError):
        pass
    return None


def holder(port: int) -> str:
    """`` (process PID: COMMAND)`` of the local process listening on ``port``, or ``''``
    where this process may not see it."""
    process = listener(port)
    if process is None:
        return ""
    try:
        return f" (process {process.pid}: {' '.join(process.cmdline())[:80]})"
    except psutil.Error:
        return ""


def paused(port: int) -> bool:
    """Whether the local process listening on ``port`` is stopped (SIGSTOP, Ctrl-Z): a
    hub there says nothing until it goes on, or another takes over."""
    process = listener(port)
    try:
        return process is not None and process.status() in (
            psutil.STATUS_STOPPED,
            psutil.STATUS_TRACING_STOP,
        )
    except psutil.Error:
        return False


def _is_signature(greeting: bytes) -> bool:
    return greeting[0] == 0xFF and greeting[9] & 1 == 1


def _read(peer: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = peer.recv(size - len(received))
        if not chunk:
            break
        received += chunk
    return received


def _socket_type_of(command: bytes) -> str | None:
    """The Socket-Type property of a READY command's body, if it holds one."""
    if command[:6] != b"\x05READY":
        return None
    offset = 6
    while offset < len(command):
        name_size = command[offset]
        name = command[offset + 1 : offset + 1 + name_size]
        offset += 1 + name_size
        if offset + 4 > len(command):
            return None
        (value_size,) = struct.unpack_from(">I", command, offset)
        value = command[offset + 4 : offset + 4 + value_size]
        offset += 4 + value_size
        if name.lower() == b"socket-type":
            return value.decode("ascii", "replace")
    return None
