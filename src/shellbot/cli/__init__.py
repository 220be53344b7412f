"""``shellbot-bus``: the bus from a terminal.

Commands: ``vote`` (the spec's distributed vote), ``hub``, ``spy``, ``publish``,
``request``, ``reply``, ``bridge`` and ``bench``. Every command takes ``--address``
(or ``SHELLBOT_BUS_ADDRESS``).

Exit codes, for every command:

- 0: done (a vote that closed, by its last ballot or by its timeout, is done);
- 1: the bus could not be used, or the command failed on it (no hub answered,
  the address is held by something else, the NATS server refused the
  credentials, no voter got ready, a join refused, a request that no one
  subscribes to or no one answered);
- 2: a usage error: an unknown option, a bad value, an invalid address, ``hub``
  on an address where it has nothing to run (nats://, memory://, inproc://);
- 3: invalid input: a message or a line of standard input that is not JSON, or
  too large for the bus;
- 130: interrupted by Ctrl-C (``hub``, ``spy`` and ``reply`` stop on it with 0);
- 143: stopped by SIGTERM (``hub``, ``spy`` and ``reply`` stop on it with 0).

The package holds a module per command (``vote``, ``hub``, ``keygen``, ``spy``,
``publish``, ``request``, ``reply``, ``bench``), the vote's screens (``screens``), and
what they share: ``_app`` (the application and its entry point), ``_common`` (exit codes, errors,
options, settings, signals), ``_probe`` (why ``hub`` could not bind) and
``_connections`` (the connections ``hub`` logs). Importing a command's module
adds it to the application, in the order of the help.
"""

from __future__ import annotations

# Each import adds its command, in the order of the help.
# isort: off
from . import vote, hub, keygen, spy, publish, request, reply, bridge, bench  # noqa: F401

# isort: on
from ._app import app, main

__all__ = ["app", "main"]
