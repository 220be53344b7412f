"""The settings page lists every key the bus reads, and only those, each with the
default the code has."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from shellbot._settings import BusSettings, known_keys

PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def rows() -> dict[str, str]:
    """The table's rows: key (without ``bus.``) to its default column."""
    table = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\| `bus\.([a-z_.]+)` \| ([^|]+) \|", line)
        if found:
            table[found[1]] = found[2].strip()
    return table


def test_every_key_the_bus_reads_is_in_the_table_and_nothing_else() -> None:
    assert sorted(rows()) == sorted(known_keys())


def test_each_default_in_the_table_is_the_codes() -> None:
    defaults = {
        setting.metadata.get("key", setting.name): setting.default
        for setting in fields(BusSettings)
    }
    table = rows()
    shown = {  # how the page writes a default: numbers with their unit, None as none
        float: lambda value: f"{value:g} s",
        int: lambda value: f"{value:,}",
        bool: lambda value: f"`{str(value).lower()}`",
        type(None): lambda value: "none",
    }
    checked = 0
    for key, default in defaults.items():
        written = shown.get(type(default))
        if (
            written is None
            or key.startswith("stream.")
            or key in ("max_message_size", "address", "inbound")
        ):
            continue  # written in words (1 MiB, 7 days, 1 or 3): checked below
        assert table[key] == written(default), key
        checked += 1
    assert checked >= 15
    assert defaults["max_message_size"] == 1 << 20 and table["max_message_size"] == "1 MiB"
    assert table["address"] == f"`{defaults['address']}`"
    assert table["stream.max_age"].startswith(f"`{int(defaults['stream.max_age'])}`")
    assert table["stream.max_bytes"].startswith(f"`{defaults['stream.max_bytes']}`")
    assert defaults["inbound"] is None and table["inbound"].startswith("TCP port + 1")
    assert table["stream.storage"] == f"`{defaults['stream.storage']}`"
