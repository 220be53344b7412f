"""``python -m shellbot.bench [--quick] [--json FILE] [--only T1,T2]``."""

from __future__ import annotations

import typer

from . import run

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


@app.command()
def bench(
    quick: bool = typer.Option(
        False, "--quick", help="A smoke run of seconds: verdicts shown, figures no measurement."
    ),
    json_file: str = typer.Option(
        None, "--json", metavar="FILE", help="Also write the results as JSON to FILE."
    ),
    only: str = typer.Option(
        None, "--only", metavar="T1,T2", help="Run only these workloads (T1 to T7)."
    ),
) -> None:
    """Measures the bus against bare pyzmq on this machine and prints ours, anchor, ratio.

    Example: python -m shellbot.bench --quick --only T1,T2
    """
    keys = [key for key in only.split(",") if key.strip()] if only else None
    raise typer.Exit(run(quick=quick, json_file=json_file, only=keys))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
