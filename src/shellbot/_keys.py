"""CURVE key pairs for a secured bus, in ZeroMQ's certificate format.

``keygen(name, folder)`` writes ``NAME.key`` (the public certificate, to copy
where others must recognise this program) and ``NAME.key_secret`` (the secret
one, which stays on this machine, readable by its owner only). The files are
the ones ``zmq.auth.load_certificate`` reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["keygen"]


def keygen(name: str, folder: str | os.PathLike[str] = ".") -> tuple[Path, Path]:
    """Writes a new key pair ``folder/NAME.key`` and ``folder/NAME.key_secret``; returns
    their paths. Refuses (``ConfigurationError``) when either exists, or the name is not
    a plain file name."""
    import zmq.auth

    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ConfigurationError(
            f"A key's name is a plain file name, such as 'hub' or 'alice'; got {name!r}"
        )
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    public, secret = target / f"{name}.key", target / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ConfigurationError(
                f"{path} exists: keygen never overwrites a key (programs and hubs may rely "
                "on it); remove it first, or choose another name"
            )
    # Made in a private folder beside the target and moved in: the secret is never
    # readable by others, not even for a moment, and a key pair appears whole.
    with tempfile.TemporaryDirectory(dir=target, prefix=f".{name}-") as work:
        os.chmod(work, 0o700)
        made_public, made_secret = zmq.auth.create_certificates(work, name)
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        # link(): fails, rather than replaces, if a file of that name appeared meanwhile
        try:
            os.link(made_secret, secret)
        except FileExistsError:
            raise ConfigurationError(f"{secret} appeared meanwhile: not overwritten") from None
        try:
            os.link(made_public, public)
        except FileExistsError:
            os.unlink(secret)
            raise ConfigurationError(f"{public} appeared meanwhile: not overwritten") from None
    return public, secret
