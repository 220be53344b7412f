"""The one way out of a process onto a bus address.

``put()`` validates and encodes in the caller, numbers each message per
channel, and hands the bytes to the transport's sender: no queue between
processes, no thread hop. Every publisher of a process shares its outbox, so
order is kept per process and a stop pill follows the messages put before it.

At exit, the outbox stops the publishers this process started (with a pill,
so what was put leaves first) and lets its sender flush, before
``multiprocessing`` terminates daemon processes and its manager. This hooks into
``multiprocessing``'s own exit (a finalizer with a high priority) because
processes it starts leave through ``os._exit``, where ``atexit`` never runs.
"""

from __future__ import annotations

import multiprocessing.util
import secrets
import threading
from collections.abc import Callable
from typing import Any

from .. import _codec, _process
from .._settings import BusSettings
from .._transports import Sender, transport_for

_encode = _codec.encode
_pack = _codec.HEADER.pack


class Outbox:
    """Sender, sender id and sequence numbers of one process on one address."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.sender_id = secrets.randbits(64)
        self._sender: Sender = transport_for(settings).open_sender()
        # channel -> [topic frame, sequence number of the last message sent on it]
        self._channels: dict[str, list[Any]] = {}
        self._max_size = settings.max_message_size
        self._lock = threading.Lock()
        self._closed = False
        self._send_one = self._sender.send_one

    def put(self, channels: Any, message: Any) -> None:
        """Publishes ``message`` on each channel; raises before queuing anything when invalid."""
        if channels.__class__ is str and channels:  # the common case, kept short
            data = _encode(message, self._max_size)
            with self._lock:
                state = self._channels.get(channels)
                if state is None:
                    state = self._channels[channels] = [_codec.topic_of(channels), 0]
                sequence = state[1] + 1
                self._send_one(state[0], _pack(self.sender_id, sequence) + data)
                state[1] = sequence  # only once sent: a failed send leaves no gap
            return
        names = _codec.check_channels(channels)
        data = _encode(message, self._max_size)
        with self._lock:
            states = []
            for name in names:  # every name checked (topic_of) before any is numbered
                state = self._channels.get(name)
                if state is None:
                    state = self._channels[name] = [_codec.topic_of(name), 0]
                states.append(state)
            frames = []
            for state in states:
                state[1] += 1
                frames.append((state[0], _pack(self.sender_id, state[1]) + data))
            try:
                self._sender.send(frames)
            except BaseException:
                for state in states:  # not sent: the numbers are free again
                    state[1] -= 1
                raise

    def request(self, channel: str, data: bytes, reply_to: bytes) -> None:
        """Sends a request (a channel checked, its JSON text encoded), numbered with the
        channel's messages, in order after them; answers go to ``reply_to``."""
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                state = self._channels[channel] = [_codec.topic_of(channel), 0]
            sequence = state[1] + 1
            self._sender.send_request(state[0], _pack(self.sender_id, sequence) + data, reply_to)
            state[1] = sequence

    def reply(self, reply_at: bytes, data: bytes) -> None:
        """Sends an answer (its JSON text) to the request that carried ``reply_at``."""
        with self._lock:
            self._sender.send_reply(reply_at, _pack(self.sender_id, 0) + data)

    def replies_dropped(self) -> int:
        """Answers sent that the broker said found no requester (see ``Sender``)."""
        return self._sender.replies_dropped()

    def sent(self) -> int:
        """How many messages this process put on the address so far."""
        with self._lock:
            return sum(state[1] for state in self._channels.values())

    def send_control(self, topic: bytes) -> None:
        """Sends a bus signal (a pill) in order with the messages put before it."""
        with self._lock:
            self._sender.send([(topic, _codec.HEADER.pack(self.sender_id, 0))])

    def send_probe(self, topic: bytes) -> int:
        """Sends a readiness probe after the messages put before it; returns how many
        copies of it, from distinct senders, prove readiness (see ``Sender.send_probe``)."""
        with self._lock:
            return self._sender.send_probe(topic, _codec.HEADER.pack(self.sender_id, 0))

    def wait_confirmed(self, timeout: float) -> int:
        """Waits until the server stored what was put (``bus.durable``); returns how many
        messages are still unconfirmed (0 on a bus that stores nothing)."""
        return self._sender.wait_confirmed(timeout)

    def counters(self) -> dict[str, int]:
        """What storing counted, on a durable bus (see ``Sender.counters``)."""
        return self._sender.counters()

    def handshake_failure(self) -> str | None:
        """Why the hub refused this process's sender (see ``Sender.handshake_failure``)."""
        return self._sender.handshake_failure()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._sender.close(self.settings.linger)


_outboxes: dict[BusSettings, Outbox] = {}
_outboxes_lock = threading.Lock()
# Stops for the publishers started by this process, run at exit before the flush.
_exit_stops: dict[int, Callable[[], None]] = {}
_exit_hooked: _process.Origin | None = None  # the process that registered the exit hook
EXIT_PRIORITY = 100  # above the manager's 0: publishers still read the context while stopping


# The outbox asked for last, by identity of its settings: put() skips hashing them.
_last: tuple[BusSettings | None, Outbox | None] = (None, None)


def outbox_for(settings: BusSettings) -> Outbox:
    global _last
    last_settings, outbox = _last
    if last_settings is settings and outbox is not None:
        return outbox
    outbox = _outboxes.get(settings)
    if outbox is not None:
        _last = (settings, outbox)
        return outbox
    with _outboxes_lock:
        outbox = _outboxes.get(settings)
        if outbox is None:
            outbox = _outboxes[settings] = Outbox(settings)
            _hook_exit()
    return outbox


def existing_outbox(settings: BusSettings) -> Outbox | None:
    """This process's outbox of these settings, if it made one."""
    return _outboxes.get(settings)


def _hook_exit() -> None:
    """Registers the exit hook once per process (a process started by multiprocessing
    begins with an empty finalizer registry)."""
    global _exit_hooked
    if _exit_hooked is None or not _exit_hooked.is_current():
        _exit_hooked = _process.Origin()
        multiprocessing.util.Finalize(None, _at_exit, exitpriority=EXIT_PRIORITY)


def stop_at_exit(key: int, stop: Callable[[], None] | None) -> None:
    """Registers (or, with None, forgets) a stop to run when this process exits."""
    if stop is None:
        _exit_stops.pop(key, None)
    else:
        _exit_stops[key] = stop
        _hook_exit()


def _at_exit() -> None:
    for stop in list(_exit_stops.values()):
        stop()
    _exit_stops.clear()
    for outbox in list(_outboxes.values()):
        outbox.close()


@_process.after_fork
def _forget_after_fork() -> None:
    global _outboxes_lock, _last
    _last = (None, None)
    _outboxes.clear()
    _exit_stops.clear()
    _outboxes_lock = threading.Lock()
