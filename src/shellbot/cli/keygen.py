"""``shellbot-bus keygen``: a CURVE key pair for a secured bus."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import ConfigurationError
from ._app import app
from ._common import epilog, fail, guarded


@app.command(
    epilog=epilog(
        "shellbot-bus keygen hub --dir keys      # on the machine that holds the hub",
        "shellbot-bus keygen alice --dir keys    # on each machine that connects",
    )
)
@guarded
def keygen(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The key's name (a file name).")],
    folder: Annotated[
        str,
        typer.Option("--dir", metavar="DIR", help="Where to write the key pair."),
    ] = ".",
) -> None:
    """Write a CURVE key pair: DIR/NAME.key (public, to copy) and DIR/NAME.key_secret
    (secret, readable by its owner only); never overwrites.

    Use them as bus.curve.server_key, bus.curve.client_key and bus.curve.authorized
    (see "Secured with CURVE" in the documentation, docs/guide/curve.md).
    """
    from .._keys import keygen as make_pair

    try:
        public, secret = make_pair(name, folder)
    except (ConfigurationError, OSError) as error:
        fail(str(error))  # not about --address, which guarded() would name
    typer.echo(f"public key {public} (copy it), secret key {secret} (keep it here)")
