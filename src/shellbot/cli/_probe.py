"""Why ``hub`` could not bind its address: probes of the port and of the hub there."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import time

from .._settings import BusSettings
from .._transports import Transport, transport_for

PROBE_TIMEOUT = 2.0  # how long hub waits for the holder of its address to answer a probe


def why_taken(settings: BusSettings, transport: Transport) -> str:
    """Why a hub could not bind the address: not an address of this machine, held by
    another program, or held by a hub (which answers the bus's probe)."""
    address = settings.address
    scheme, rest = address.split("://", 1)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        host = "0.0.0.0" if host == "*" else host.strip("[]")
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host, int(port)))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return (
                    f"cannot bind {address} ({error.strerror}): a hub binds an address of its "
                    "own machine; tcp://0.0.0.0:PORT takes every interface"
                )
    foreign = transport.not_a_hub()
    if foreign is not None:
        return foreign
    if _hub_answers(settings, PROBE_TIMEOUT):
        return (
            f"{address} is taken by a hub, which answered the bus's probe: publishers and "
            "subscribers can use it as it is"
        )
    return (
        f"{address} is taken by a program that speaks ZeroMQ but did not answer the bus's "
        f"probe within {PROBE_TIMEOUT:g} s: not a hub of this bus (or one whose inbound side "
        "is not the usual one); stop that program, or use another address"
    )


def _hub_answers(settings: BusSettings, timeout: float) -> bool:
    """True when a probe sent to the hub's inbound side comes back at the address."""
    from .. import _codec  # the bus's own probe, sent as a publisher sends it
    from .._publishing import outbox as _outbox

    # Probes that no hub takes must not hold the command at exit.
    settings = dataclasses.replace(settings, linger=0.0)
    probe = _codec.PROBE + os.urandom(8).hex().encode()
    receiver = transport_for(settings).open_receiver()
    try:
        receiver.subscribe(probe)
        outbox = _outbox.outbox_for(settings)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            outbox.send_control(probe)
            frames = receiver.receive(min(0.1, left))
            if frames is not None and frames[0] == probe:
                return True
        return False
    finally:
        receiver.close()
