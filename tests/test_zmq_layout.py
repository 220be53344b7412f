"""The ZeroMQ transport's package imports one way: each module only from those below it.

The order is the one ``_transports/zmq/__init__.py`` states; a module that imports
one above it (as the hub once took the endpoints' names, and they imported the hub
lazily) fails here, whether the import is at the top or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shellbot._transports.zmq as package

# Top first: a module may import only modules after it.
ORDER = [
    "__init__",
    "member",
    "endpoints",
    "hub",
    "routing",
    "shares",
    "requests",
    "curve",
    "curve_folder",
    "handover",
    "takeover",
    "zmtp",
    "sockets",
]


def imported_siblings(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (``from . import x``, ``from .x import``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
    return found


def test_every_module_of_the_package_has_its_place() -> None:
    folder = Path(package.__file__).parent
    assert sorted(path.stem for path in folder.glob("*.py")) == sorted(ORDER)


def test_imports_run_one_way() -> None:
    folder = Path(package.__file__).parent
    upward = {
        module: sorted(
            sibling
            for sibling in imported_siblings(folder / f"{module}.py")
            if ORDER.index(sibling) <= ORDER.index(module)
        )
        for module in ORDER
    }
    assert {module: above for module, above in upward.items() if above} == {}
