"""The API reference of the documentation site shows every public name, each with a
docstring: the reference is generated from them."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"
PUBLIC = {  # module -> its reference page
    "shellbot.bus": "bus.md",
    "shellbot.errors": "errors.md",
    "shellbot.testing": "testing.md",
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_every_public_name_is_in_the_reference_with_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    page = (REFERENCE / PUBLIC[module_name]).read_text(encoding="utf-8")
    assert inspect.getdoc(module)
    for name in module.__all__:
        member = getattr(module, name)
        if isinstance(member, (tuple, str)):  # a constant: documented in its module's text
            continue
        assert f"::: {module_name}.{name}\n" in page, f"{module_name}.{name} not in the reference"
        assert inspect.getdoc(member), f"{module_name}.{name} has no docstring"
        for attribute, value in vars(member).items() if inspect.isclass(member) else ():
            if attribute.startswith("_") or not callable(value):
                continue
            assert inspect.getdoc(value), f"{module_name}.{name}.{attribute} has no docstring"


def test_the_package_and_the_context_are_in_the_reference() -> None:
    import shellbot

    assert set(shellbot.__all__) == {"Context", "__version__"}
    assert "::: shellbot.context.Context\n" in (REFERENCE / "context.md").read_text()
    assert "::: shellbot\n" in (REFERENCE / "shellbot.md").read_text()
