"""``python -m shellbot``: the version, and where the documentation is."""

from __future__ import annotations

from pathlib import Path

from . import __version__


def where_the_docs_are() -> list[str]:
    """Lines saying where the documentation is, for this installation."""
    lines = []
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "mkdocs.yml").is_file():  # an editable install, from a checkout
        lines.append(f"documentation: {checkout / 'docs'} (Markdown pages)")
        where = f"in {checkout}"
    else:
        where = "in a checkout of shellbot-bus"
    lines += [
        f"read it in a browser: {where}, pip install -e '.[docs]' && mkdocs serve,",
        "then open http://127.0.0.1:8000",
        "the command line: shellbot-bus --help",
    ]
    return lines


def main() -> None:
    """Prints the version and where the documentation is."""
    print(f"shellbot {__version__}: an information bus between publishers and subscribers")
    for line in where_the_docs_are():
        print(line)


if __name__ == "__main__":
    main()
