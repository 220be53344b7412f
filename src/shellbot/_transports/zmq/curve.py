"""CURVE on the ZeroMQ bus: encryption, and authentication by public key.

Three settings (certificate files as ``shellbot-bus keygen`` writes them):

- ``bus.curve.server_key``: the hub's certificate. Its secret one lets this
  process hold the hub; with the public one only, the process connects and
  never binds.
- ``bus.curve.client_key``: this process's secret certificate; its sockets
  (PUSH to the inbound side, SUB to the subscriber side) are CURVE clients.
- ``bus.curve.authorized``: a folder of public certificates; the hub accepts
  these keys (and its own process's client key) and no other. A file that is
  not one is skipped with a warning; a key removed loses its connections
  (``curve_folder``).

A secret certificate that others than its owner may read is refused, as
OpenSSH refuses such a private key.

None set: a plain bus, untouched. Only ``tcp://`` takes them: ``ipc://`` and
``inproc://`` rely on the machine's own permissions.

The hub's sockets are CURVE servers with a ZAP domain of their own; the ZAP
handler is pyzmq's authenticator, in a thread, called once per handshake (never
per message). Clients watch their handshakes through a socket monitor, read
only while ``start()`` or ``wait_ready()`` wait: ``failure()`` says who refused
and what to check.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ... import _process
from ..._settings import BusSettings, check_curve_scheme
from ...errors import ConfigurationError
from .curve_folder import Authorized, Guard

# Handshake failures without a reason from the hub (it dropped the connection), in a
# row, before they are reported: one alone may be a hub that went away meanwhile.
DROPS_REPORTED = 2


@dataclass(frozen=True)
class Curve:
    server_key: str  # the file, for messages
    server_public: bytes
    server_secret: bytes | None
    client_key: str | None
    client_public: bytes | None
    client_secret: bytes | None
    authorized: str | None


_loaded: dict[BusSettings, Curve | None] = {}


def curve_of(settings: BusSettings) -> Curve | None:
    """The CURVE keys of these settings, read once; None when none are set."""
    if settings in _loaded:
        return _loaded[settings]
    given = (settings.curve_server_key, settings.curve_client_key, settings.curve_authorized)
    curve = None
    if any(given):
        check_curve_scheme(settings)  # settings made without from_context() too
        if not settings.curve_server_key:
            raise ConfigurationError(
                "bus.curve.client_key or bus.curve.authorized is set but not "
                "bus.curve.server_key: give the hub's certificate (its public NAME.key, or "
                "NAME.key_secret on machines that may hold the hub)"
            )
        server_public, server_secret = _certificate(
            settings.curve_server_key, "bus.curve.server_key"
        )
        client_public = client_secret = None
        if settings.curve_client_key:
            client_public, client_secret = _certificate(
                settings.curve_client_key, "bus.curve.client_key"
            )
            if client_secret is None:
                raise ConfigurationError(
                    f"bus.curve.client_key {settings.curve_client_key} is a public "
                    "certificate: give this program's secret one (NAME.key_secret)"
                )
        if settings.curve_authorized and not os.path.isdir(settings.curve_authorized):
            raise ConfigurationError(
                f"bus.curve.authorized {settings.curve_authorized} is not a folder: give the "
                "folder of the public certificates (NAME.key) allowed to connect"
            )
        curve = Curve(
            settings.curve_server_key,
            server_public,
            server_secret,
            settings.curve_client_key,
            client_public,
            client_secret,
            settings.curve_authorized,
        )
    _loaded[settings] = curve
    return curve


def _certificate(path: str, setting: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise ConfigurationError(
            f"{setting} {path} is not a readable ZeroMQ certificate ({error}): make one "
            "with `shellbot-bus keygen NAME`"
        ) from None
    if secret is not None:
        # As OpenSSH does: a secret others may read is no longer a secret of this program.
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"{setting} {path} holds a secret key, and its permissions {mode:04o} let "
                f"others than its owner read or change it: run `chmod 600 {path}`"
            )
    return public, secret


def secure_client(socket: zmq.Socket, curve: Curve) -> None:
    """Makes ``socket`` a CURVE client of the hub (before it connects)."""
    if curve.client_secret is None or curve.client_public is None:
        raise ConfigurationError(
            "bus.curve.server_key is set but not bus.curve.client_key: a program that "
            "connects to a secured hub needs a secret certificate of its own (make one with "
            "`shellbot-bus keygen NAME`, and copy NAME.key into the hub's "
            "bus.curve.authorized folder)"
        )
    socket.curve_serverkey = curve.server_public
    socket.curve_publickey = curve.client_public
    socket.curve_secretkey = curve.client_secret


def holding_refused(curve: Curve) -> str | None:
    """Why this process cannot hold a secured hub, or None when it can."""
    if curve.server_secret is None:
        return (
            f"bus.curve.server_key {curve.server_key} is the hub's public certificate: "
            "this process only connects, it cannot hold the hub"
        )
    if not curve.authorized:
        return (
            "bus.curve.server_key holds the hub's secret but bus.curve.authorized is not "
            "set: a secured hub needs the folder of the public keys it accepts"
        )
    return None


# -- the hub's side --------------------------------------------------------------------


class _Authenticators:
    """One ZAP handler per ZeroMQ context (libzmq binds one endpoint per context), shared
    by the hubs of this process, each with a domain of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[ThreadAuthenticator, set[str]]] = {}

    def add(self, context: zmq.Context, domain: str, authorized: Authorized) -> None:
        with self._lock:
            entry = self._running.get(id(context))
            if entry is None:
                authenticator = ThreadAuthenticator(context)
                authenticator.start()
                entry = self._running[id(context)] = (authenticator, set())
            entry[0].configure_curve_callback(domain, authorized)
            entry[1].add(domain)

    def remove(self, context: zmq.Context, domain: str) -> None:
        with self._lock:
            entry = self._running.get(id(context))
            if entry is None:
                return
            authenticator, domains = entry
            authenticator.credentials_providers.pop(domain, None)
            domains.discard(domain)
            if not domains:
                del self._running[id(context)]
                authenticator.stop()

    def forget(self) -> None:
        """After a fork: the handler's thread stayed in the parent."""
        self._lock = threading.Lock()
        self._running.clear()


_authenticators = _Authenticators()


def secure_hub(context: zmq.Context, sockets: list[zmq.Socket], curve: Curve, domain: str) -> Any:
    """Makes the hub's sockets CURVE servers checked by a ZAP handler (before they bind);
    returns what ``release_hub`` takes once they are closed."""
    assert curve.server_secret is not None and curve.authorized is not None
    authorized = Authorized(curve.authorized, curve.client_public)
    guard = Guard(sockets, authorized)  # before they bind: it must see every connection
    _authenticators.add(context, domain, authorized)
    for socket in sockets:
        socket.curve_server = True
        socket.curve_publickey = curve.server_public
        socket.curve_secretkey = curve.server_secret
        socket.zap_domain = domain.encode()
    return (context, domain, guard)


def subscriptions_reader(token: Any) -> Any:
    """What the hub reads its subscriptions through on a secured hub (the guard learns
    from them which key holds each subscriber's connection)."""
    return token[2]


def watch_inbound(token: Any, connections: Any) -> None:
    """Gives the guard the hub's watch of its inbound connections (they share one
    monitor: libzmq gives a socket only one)."""
    token[2].inbound = connections


def release_hub(token: Any) -> None:
    context, domain, guard = token
    guard.stop()
    _authenticators.remove(context, domain)


_process.after_fork(_authenticators.forget)


# -- the clients' side -----------------------------------------------------------------

_WATCHED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class HandshakeWatch:
    """The handshakes of one client socket, as its monitor reports them."""

    def __init__(self, socket: zmq.Socket, curve: Curve, side: str, endpoint: str) -> None:
        self._monitor: zmq.Socket | None = socket.get_monitor_socket(_WATCHED)
        self._curve = curve
        self._side = side
        self._endpoint = endpoint
        self._failure: str | None = None
        self._drops = 0
        self._lock = threading.Lock()

    def failure(self) -> str | None:
        """Why the hub refused this socket's latest handshakes; None once one succeeded
        (or none failed yet). Reads only the events queued so far."""
        from zmq.utils.monitor import parse_monitor_message

        with self._lock:
            monitor = self._monitor
            if monitor is None or monitor.closed:
                return None
            while True:
                try:
                    frames = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.ZMQError:
                    break
                event = parse_monitor_message(frames)
                self._take(event["event"], event["value"])
            return self._failure

    def _take(self, event: int, value: int) -> None:
        curve, where = self._curve, f"the hub's {self._side} at {self._endpoint}"
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._failure, self._drops = None, 0
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self._failure = (
                f"CURVE: {where} refused this program's key (bus.curve.client_key "
                f"{curve.client_key}, public key {_text(curve.client_public)}; status "
                f"{value}): it is not among the hub's authorized keys; copy this program's "
                "public certificate (NAME.key) into the hub's bus.curve.authorized folder"
            )
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                self._failure = (
                    f"CURVE: {where} does not speak CURVE (a plain hub, or one without "
                    "bus.curve.server_key) while this program has bus.curve.* set: start the "
                    "hub with the same bus.curve settings, or remove them here"
                )
            else:
                self._note_drop(where)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._note_drop(where)

    def _note_drop(self, where: str) -> None:
        self._drops += 1
        if self._drops >= DROPS_REPORTED:
            self._failure = (
                f"CURVE: {where} dropped the handshake: it holds another server key than "
                f"bus.curve.server_key {self._curve.server_key} (public key "
                f"{_text(self._curve.server_public)}), or it is a plain hub without "
                "bus.curve settings; copy the hub's public certificate from the machine "
                "that holds it"
            )

    def close(self) -> None:
        with self._lock:
            if self._monitor is not None:
                self._monitor.close(linger=0)
                self._monitor = None


def _text(key: bytes | None) -> str:
    return "none" if key is None else key.decode("ascii")


def secure_and_watch(
    socket: zmq.Socket, settings: BusSettings, side: str, endpoint: str
) -> HandshakeWatch | None:
    """With bus.curve.* set: makes ``socket`` a CURVE client, watched; else leaves it be."""
    curve = curve_of(settings)
    if curve is None:
        return None
    try:
        secure_client(socket, curve)
    except BaseException:
        socket.close(linger=0)
        raise
    return HandshakeWatch(socket, curve, side, endpoint)


def unwatch(socket: zmq.Socket, watch: HandshakeWatch | None) -> None:
    if watch is not None:
        with contextlib.suppress(zmq.ZMQError):
            socket.disable_monitor()
        watch.close()
