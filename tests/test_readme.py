"""The README fits on a screen and shows what runs: its example and the vote's output
are the files of docs/examples/ that tests/test_doc_examples.py runs, and every link
leads to a page of the documentation."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "docs" / "examples"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_is_at_most_8_kb() -> None:
    assert len(README.read_bytes()) <= 8 * 1024


def test_the_readme_example_is_the_quickstart_the_tests_run() -> None:
    [example] = blocks("python")
    assert example == (EXAMPLES / "quickstart.py").read_text(encoding="utf-8")


def test_the_readme_vote_is_the_transcript_checked_against_a_run() -> None:
    transcript = (EXAMPLES / "vote.console").read_text(encoding="utf-8")
    assert transcript in blocks("console")


def test_the_two_commands_and_how_to_read_the_docs() -> None:
    text = README.read_text(encoding="utf-8")
    # .ci/run reads the test command from the line that starts so
    assert re.search(r"^pip install -e '\.\[test\]' && python -m pytest", text, re.M)
    assert re.search(r"^pip install \. && shellbot-bus vote", text, re.M)
    assert "pip install -e '.[docs]' && mkdocs serve" in text
    assert "python3 -m venv .venv" in text


def test_every_link_of_the_readme_leads_to_a_file() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    for link in local:
        assert (ROOT / link).is_file(), link
    for page in ("guide/api.md", "guide/nats.md", "guide/testing.md"):  # the bar's three
        assert f"docs/{page}" in local
