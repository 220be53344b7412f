"""The public names: each module's __all__ is exactly what the module shows."""

from __future__ import annotations
import __future__

import types

import pytest

import shellbot
import shellbot.bus
import shellbot.errors


def shown(module: types.ModuleType) -> set[str]:
    """The names a reader of the module sees: not private, not submodules, not
    ``from __future__`` features."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }


@pytest.mark.parametrize("module", [shellbot, shellbot.bus, shellbot.errors])
def test_all_is_what_the_module_shows(module: types.ModuleType) -> None:
    dunders = {name for name in module.__all__ if name.startswith("__")}
    assert set(module.__all__) - dunders == shown(module)
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name)


def test_the_public_surface() -> None:
    assert shellbot.__all__ == ["Context", "__version__"]
    assert sorted(shellbot.bus.__all__) == ["Bus", "Message", "Publisher", "Subscriber"]
    assert isinstance(shellbot.__version__, str)


@pytest.mark.parametrize("module", [shellbot.bus, shellbot.errors])
def test_exported_names_belong_to_the_package(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert getattr(module, name).__module__.startswith("shellbot.")
