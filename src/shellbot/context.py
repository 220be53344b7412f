"""Settings shared by the processes of one program.

``Context`` keeps settings under dotted keys (``bus.address``,
``general.switch``) in a dictionary held by a ``multiprocessing`` manager, so a
change made by the parent after ``publisher.start()`` is seen by the publisher
process, forked or spawned. That round trip is slow (a fraction of a
millisecond), which is why the bus never reads the context per message.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.managers import SyncManager
from typing import Any

__all__ = ["Context"]

_manager: SyncManager | None = None
_manager_pid: int | None = None
_manager_lock = threading.Lock()
PARENT_WATCH_INTERVAL = 0.25  # how often the manager process looks whether its program lives


def _shared_manager() -> SyncManager:
    """One manager process per program, started on first use."""
    global _manager, _manager_pid
    with _manager_lock:
        if _manager is None or _manager_pid != os.getpid():
            manager = SyncManager(ctx=multiprocessing.get_context())
            manager.start(_end_with_program, (os.getpid(),))
            _manager, _manager_pid = manager, os.getpid()
        return _manager


def _end_with_program(program: int) -> None:
    """In the manager process: ends it once the program that started it is gone, however
    it ended (a program killed by a signal runs no exit handler to stop its manager).

    Under fork and spawn the program is the manager's parent, and a new parent (init, a
    subreaper) tells at once. Under forkserver the parent is the fork server, which
    lives as long as its children do: there, the program's pid is looked at too. Not
    PR_SET_PDEATHSIG: it fires when the starting thread ends, which a program may outlive.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and _exists(program):
            time.sleep(PARENT_WATCH_INTERVAL)
        os._exit(0)

    threading.Thread(target=watch, name="shellbot-context-watch", daemon=True).start()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or reused by another user
        return False
    return True


class Context:
    """Settings with dotted keys, shared across the processes of a program.

    Example::

        context = Context({'bus': {'address': 'tcp://127.0.0.1:5555'}})
        context.get('bus.address')        # 'tcp://127.0.0.1:5555'
        context.set('general.switch', 'off')
    """

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        manager = _shared_manager()
        self._values = manager.dict()
        self._lock = manager.RLock()
        if settings:
            self.apply(settings)

    def apply(self, settings: Mapping[str, Any]) -> None:
        """Merges nested dicts: ``{'bus': {'address': x}}`` sets ``bus.address``."""
        flat: dict[str, Any] = {}
        _flatten(settings, "", flat)
        with self._lock:
            self._values.update(flat)

    def clear(self) -> None:
        """Removes every setting."""
        with self._lock:
            self._values.clear()

    def is_empty(self) -> bool:
        """True when no setting is set."""
        return len(self._values) == 0

    def check(
        self,
        key: str,
        default: Any = None,
        is_mandatory: bool = False,
        validate: Callable[[Any], bool] | None = None,
        filter: bool = False,
    ) -> None:
        """Checks one setting, and updates the context accordingly.

        - a missing key gets ``default`` (when it is not None);
        - a missing key with ``is_mandatory`` raises ``KeyError``;
        - with ``filter``, a value ``'$NAME'`` is replaced by the environment
          variable ``NAME`` (``KeyError`` when it is not set);
        - with ``validate``, a value for which it returns False raises ``ValueError``.
        """
        with self._lock:
            value = self._values.get(key)
            if value is None:
                if is_mandatory:
                    raise KeyError(f"Missing mandatory setting '{key}': set it in the context")
                if default is None:
                    return
                value = default
            if filter and isinstance(value, str) and value.startswith("$"):
                name = value[1:]
                if name not in os.environ:
                    raise KeyError(
                        f"Setting '{key}' names the environment variable '{name}', which is not set"
                    )
                value = os.environ[name]
            if validate is not None and not validate(value):
                raise ValueError(f"Invalid value for setting '{key}': {value!r}")
            self._values[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; for a prefix such as ``'bus'``, a dict of the keys below it."""
        value = self._values.get(key)
        if value is not None:
            return value
        prefix = key + "."
        below = {k[len(prefix) :]: v for k, v in self._values.items() if k.startswith(prefix)}
        return below if below else default

    def is_switched_off(self) -> bool:
        """True when ``general.switch`` is ``'off'``: one round trip, for loops that ask often.

        Also True once the program that owns the context is gone (its manager no
        longer answers): nothing is left to switch the loop off.
        """
        try:
            return self._values.get("general.switch") == "off"
        except (OSError, EOFError, ConnectionError):
            return True

    def set(self, key: str, value: Any) -> None:
        """Sets one setting."""
        self._values[key] = value

    def increment(self, key: str, delta: int = 1) -> int:
        """Adds ``delta`` to a counter (missing counts as 0), atomically, and returns the result."""
        with self._lock:
            value: int = self._values.get(key, 0) + delta
            self._values[key] = value
            return value

    def decrement(self, key: str, delta: int = 1) -> int:
        """Takes ``delta`` from a counter (missing counts as 0), atomically; returns the result."""
        return self.increment(key, -delta)

    def has(self, prefix: str) -> bool:
        """True when ``prefix`` is a key, or the start of a dotted key."""
        if prefix in self._values:
            return True
        dotted = prefix + "."
        keys = self._values.keys()  # one round trip to the manager, not one per key
        return any(key.startswith(dotted) for key in keys)

    def __repr__(self) -> str:
        return f"Context({dict(self._values)!r})"


def _flatten(settings: Mapping[str, Any], prefix: str, into: dict[str, Any]) -> None:
    for key, value in settings.items():
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{key}.", into)
        else:
            into[f"{prefix}{key}"] = value
