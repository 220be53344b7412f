"""The ``bus`` fixture's factory: a fresh bus per call, stopped and closed after the test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bus import Bus, Publisher, Subscriber
from ..context import Context
from ._addresses import SCHEMES, unique_address
from ._faults import resume_publisher

__all__ = ["BusFactory", "FixtureBus"]


class FixtureBus(Bus):
    """A ``Bus`` that remembers the publishers and subscribers it made, so that the test's
    end stops and closes them, whether the test passed, failed or timed out."""

    def __init__(self, context: Context, made: list[Publisher | Subscriber]) -> None:
        super().__init__(context)
        self._made = made

    @property
    def address(self) -> str:
        """This bus's ``bus.address``."""
        return str(self.context.get("bus.address"))

    def publish(self) -> Publisher:
        publisher = super().publish()
        self._made.append(publisher)
        return publisher

    def subscribe(
        self,
        channels: str | list[str],
        pattern: bool = False,
        durable: str | None = None,
        group: str | None = None,
    ) -> Subscriber:
        subscriber = super().subscribe(channels, pattern=pattern, durable=durable, group=group)
        self._made.append(subscriber)
        return subscriber


class BusFactory:
    """Makes buses on fresh addresses: ``bus()`` on the default scheme (``memory``, or
    the fixture's parameter), ``bus('tcp')`` on a scheme, ``bus(address=other.address)`` on
    the address of another; settings under ``bus`` as keywords: ``bus('nats', durable=True)``.

    On ``nats://`` every bus of a test is on the test's own nats-server (the
    ``nats_server`` fixture, started at the first such call)."""

    def __init__(self, scheme: str, nats_url: Callable[[], str]) -> None:
        _check_scheme(scheme)
        self.scheme = scheme
        self._folder: str | None = None  # for ipc:// sockets: short, as their paths must be
        self._nats_url = nats_url
        self._made: list[Publisher | Subscriber] = []

    def __call__(
        self, scheme: str | None = None, *, address: str | None = None, **settings: Any
    ) -> FixtureBus:
        """A bus of its own ``Context``, checked (``bus.check()``).

        Args:
            scheme: ``memory``, ``inproc``, ``ipc``, ``tcp`` or ``nats``; the factory's
                default when None.
            address: an address to use instead of a fresh one: another bus's
                (``bus(address=first.address)``), or a cluster's.
            **settings: more settings under ``bus``, e.g. ``linger=0.5``.

        Returns:
            A ``FixtureBus``: a ``Bus`` whose publishers and subscribers end with the test.

        Raises:
            ValueError: an unknown scheme.
        """
        address = address or self.address(scheme)
        bus = FixtureBus(Context({"bus": {**settings, "address": address}}), self._made)
        bus.check()
        return bus

    def address(self, scheme: str | None = None) -> str:
        """A fresh ``bus.address`` of ``scheme`` (the factory's default when None): for
        another program, a command line or a ``Context`` of the test's own."""
        scheme = scheme or self.scheme
        _check_scheme(scheme)
        if scheme == "nats":
            return self._nats_url()
        if scheme == "ipc" and self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="shellbot-ipc-")
        return unique_address(scheme, Path(self._folder or "."))

    def close(self) -> None:
        """Closes every subscriber and stops every publisher the buses made, newest first."""
        errors: list[BaseException] = []
        for made in reversed(self._made):
            try:
                if isinstance(made, Subscriber):
                    made.close()
                elif made.is_alive():
                    resume_publisher(made)  # a paused hub holder cannot stop
                    made.stop(timeout=5.0)
            except Exception as error:  # every one is ended, then the first error is raised
                errors.append(error)
        self._made.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        if errors:
            raise errors[0]


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"a bus fixture's scheme is one of {', '.join(SCHEMES)}; got {scheme!r}")
