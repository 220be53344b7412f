"""The fuzz harness (fuzz/fuzz_decoders.py) stays alive: a few thousand inputs here, so a
change to the decoders' private names breaks this test, not a later fuzzing campaign."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_decoders.py"


def test_the_fuzz_harness_runs_and_finds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris ships wheels for Linux x86_64 only")
    result = subprocess.run(
        [sys.executable, str(HARNESS), "-runs=3000", "-seed=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Done 3000 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))


def test_a_broken_harness_says_so_instead_of_writing_a_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris ships wheels for Linux x86_64 only")
    broken = tmp_path / "fuzz_broken.py"
    text = HARNESS.read_text().replace("subscriber._decoder.take(", "subscriber._take(")
    assert text != HARNESS.read_text()
    broken.write_text(text)
    result = subprocess.run(
        [sys.executable, str(broken), "-runs=10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the harness no longer fits the bus" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
