"""``python -m shellbot`` says the version and where the documentation is."""

from __future__ import annotations

import subprocess
import sys

import shellbot


def test_python_m_shellbot_prints_the_version_and_the_docs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "shellbot"], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.startswith(f"shellbot {shellbot.__version__}:")
    assert "pip install -e '.[docs]' && mkdocs serve" in run.stdout
    assert "http://127.0.0.1:8000" in run.stdout
