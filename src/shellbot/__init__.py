"""shellbot: an information bus between publishers and subscribers, for Python processes.

The public surface is ``shellbot.Context``, the ``shellbot.bus`` module
(``Bus``, ``Publisher``, ``Subscriber``, ``Message``), ``shellbot.errors`` and
the ``shellbot-bus`` command.
"""

from __future__ import annotations

from .context import Context

__all__ = ["Context", "__version__"]

__version__ = "0.1.0"  # the one place of the version: pyproject.toml reads it here
