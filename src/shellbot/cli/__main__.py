"""``python -m shellbot.cli``: the ``shellbot-bus`` command."""

from . import main

main()
