"""Types: the public modules are annotated and mypy finds nothing in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import shellbot

SOURCE = Path(shellbot.__file__).parent
PUBLIC = ["bus.py", "context.py", "errors.py"]


def test_the_package_ships_py_typed() -> None:
    assert (SOURCE / "py.typed").is_file()


@pytest.mark.parametrize("strict", [False, True], ids=["project-settings", "strict"])
def test_mypy_is_clean_on_the_public_modules(tmp_path: Path, strict: bool) -> None:
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")]
    if strict:
        command.append("--strict")
    completed = subprocess.run(
        [*command, *(str(SOURCE / name) for name in PUBLIC)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SOURCE.parent.parent,  # where pyproject.toml holds the mypy settings
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
