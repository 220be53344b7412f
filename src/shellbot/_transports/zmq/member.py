"""A queue group's member on the embedded ZeroMQ transport.

It asks the hub for its channels as a member of its group (``SHARE_REQUEST``, see
``_codec``), and the hub sends it its share in batches whose topic says how many
messages they hold. The member counts what it was delivered, and returns credit
(the running total its program is done with) through a PUSH socket of its own
to the hub's inbound side: the hub sends a member only while it has room
(``_shares``). The subscriber above sees the ordinary batch topic.
"""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from ..._codec import CREDIT, HEADER, ROUTE, SHARE_COUNT, SHARE_MARK, SHARE_REQUEST, TERMINATOR
from ..._settings import BusSettings
from .._shares import CREDIT_STEP
from ..base import Frames
from .curve import HandshakeWatch, secure_and_watch, unwatch
from .endpoints import ZmqReceiver
from .sockets import (
    NOBLOCK,
    RECONNECT_INTERVAL_MS,
    SNDMORE,
    connect_address,
    inbound_address,
    keep_alive,
    send,
)

_unpack_count = SHARE_COUNT.unpack_from


class ZmqMemberReceiver(ZmqReceiver):
    def __init__(self, context: zmq.Context, settings: BusSettings, group: str) -> None:
        super().__init__(context, settings)
        batch_topic = self.batch_topic
        assert batch_topic is not None  # a ZeroMQ receiver's batches come routed
        self._batch_topic = batch_topic
        identity = batch_topic[len(ROUTE) :]
        self._route_request = SHARE_REQUEST + identity + b":" + group.encode() + TERMINATOR
        self._share_topic_size = len(batch_topic) + len(SHARE_MARK) + SHARE_COUNT.size
        self._credit_topic = CREDIT + identity
        self._context = context
        self._settings = settings
        self._credit_watch: HandshakeWatch | None = None
        # Connected now, so that it is by the time the first credit goes back.
        self._credit: zmq.Socket | None = self._open_credit()
        self._delivered = 0  # messages of the shares received
        self._done = 0  # of those, what the program is done with, as last told
        self._credited = 0

    def receive(self, timeout: float | None) -> Frames | None:
        frames = super().receive(timeout)
        if frames is not None:
            self._count(frames)
        return frames

    def receive_more(self) -> Iterator[Frames]:
        for frames in super().receive_more():
            self._count(frames)
            yield frames

    def _count(self, frames: Frames) -> None:
        topic = frames[0]
        if len(topic) == self._share_topic_size and topic.startswith(self._batch_topic):
            self._delivered += _unpack_count(topic, len(topic) - SHARE_COUNT.size)[0]
            frames[0] = self._batch_topic

    def settle(self, unhanded: int) -> None:
        done = self._done = self._delivered - unhanded
        if done <= self._credited or (unhanded and done < self._credited + CREDIT_STEP):
            return
        self._send_credit()

    def _send_credit(self) -> None:
        socket = self._credit
        if socket is None:
            return
        try:
            send(socket, self._credit_topic, SNDMORE | NOBLOCK)
            send(socket, HEADER.pack(self._done, 0))
        except zmq.ZMQError:  # no hub takes it now: the running total goes with the next
            return
        self._credited = self._done

    def _open_credit(self) -> zmq.Socket:
        settings = self._settings
        socket = self._context.socket(zmq.PUSH)
        socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        keep_alive(socket)
        address = inbound_address(settings)
        self._credit_watch = secure_and_watch(socket, settings, "inbound side", address)
        socket.connect(connect_address(address))
        self._credit = socket
        return socket

    def close(self) -> None:
        if self._done > self._credited:
            self._send_credit()  # what it never handed is lost, and counted so at the hub
        credit, self._credit = self._credit, None
        if credit is not None:  # the last credit may leave, briefly
            unwatch(credit, self._credit_watch)
            credit.close(linger=min(200, int(self._settings.linger * 1000)))
        super().close()
