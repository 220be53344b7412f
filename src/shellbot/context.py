"""Settings shared by the processes of one program.

``Context`` keeps settings under dotted keys (``bus.address``,
``general.switch``) in a dictionary held by a ``multiprocessing`` manager, so a
change made by the parent after ``publisher.start()`` is seen by the publisher
process, forked or spawned. That round trip is slow (a fraction of a
millisecond), which is why the bus never reads the context per message.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import pickle
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.managers import SyncManager
from typing import Any

from . import _process

__all__ = ["Context"]

log = logging.getLogger("shellbot.context")

_manager: SyncManager | None = None
_manager_origin: _process.Origin | None = None  # the process that started _manager
_manager_lock = threading.Lock()
_inherited_temp: str | None = None  # a forked child's: its parent's multiprocessing folder
PARENT_WATCH_INTERVAL = 0.25  # how often the manager process looks whether its program lives


def _shared_manager() -> SyncManager:
    """One manager process per program, started on first use."""
    global _manager, _manager_origin
    with _manager_lock:
        if _manager is None or _manager_origin is None or not _manager_origin.is_current():
            manager = SyncManager(ctx=multiprocessing.get_context())
            manager.start(_end_with_program, (os.getpid(), _own_temp_folder()))
            _manager, _manager_origin = manager, _process.Origin()
        return _manager


def _end_with_program(program: int, program_temp: str | None) -> None:
    """In the manager process: ends it once the program that started it is gone, however
    it ended (a program killed by a signal runs no exit handler to stop its manager).
    On its way out it removes the program's own multiprocessing folder (``pymp-*``,
    ``program_temp``), which a killed program leaves behind.

    Under fork and spawn the program is the manager's parent, and a new parent (init, a
    subreaper) tells at once. Under forkserver the parent is the fork server, which
    lives as long as its children do: there, the program's pid is looked at too. Not
    PR_SET_PDEATHSIG: it fires when the starting thread ends, which a program may outlive.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and _exists(program):
            time.sleep(PARENT_WATCH_INTERVAL)
        if program_temp is not None:  # the manager's own is the same: it inherits it
            shutil.rmtree(program_temp, ignore_errors=True)
        os._exit(0)

    threading.Thread(target=watch, name="shellbot-context-watch", daemon=True).start()


def _own_temp_folder() -> str | None:
    """multiprocessing's temporary folder of this process (made now if need be) when it
    is its own; None when it may be one a parent made and keeps using: a process
    started by multiprocessing, forked or spawned, and a bare forked child, inherit it."""
    before = _temp_folder()
    folder = multiprocessing.util.get_temp_dir()
    if before is None:
        return folder  # made just now, by this process
    if multiprocessing.parent_process() is not None or before == _inherited_temp:
        return None
    return folder


def _temp_folder() -> str | None:
    """multiprocessing's temporary folder of this process, if it has one yet (kept in its
    private config, which a forked child inherits)."""
    config: dict[str, Any] = getattr(multiprocessing.process.current_process(), "_config", {})
    return config.get("tempdir")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or reused by another user
        return False
    return True


@_process.after_fork
def _forget_manager_lock() -> None:
    """A forked child makes its own manager on first use, under a lock no thread of the
    parent can hold."""
    global _manager_lock, _inherited_temp
    _manager_lock = threading.Lock()
    _inherited_temp = _temp_folder()


class Context:
    """Settings with dotted keys, shared across the processes of a program.

    Example::

        context = Context({'bus': {'address': 'tcp://127.0.0.1:5555'}})
        context.get('bus.address')        # 'tcp://127.0.0.1:5555'
        context.set('general.switch', 'off')
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        filter: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        """``filter(value, default)``, when given, replaces the default filter of
        ``check(key, filter=True)``, which reads ``'$NAME'`` from the environment.

        Args:
            settings: nested dicts, applied as ``apply()`` does: ``{'bus': {'address':
                x}}`` sets ``bus.address``.
            filter: the filter of ``check(key, filter=True)``.
        """
        manager = _shared_manager()
        self._values = manager.dict()
        self._lock = manager.RLock()
        self._custom_filter: Callable[[Any, Any], Any] | None = filter
        self._filter_lost = ""  # why the filter given to Context() is not in this process
        if settings:
            self.apply(settings)

    def __getstate__(self) -> dict[str, Any]:
        """A context travels to spawned processes; a filter that cannot (a lambda, a
        nested function) is left behind, and check(filter=True) there says so."""
        state = self.__dict__.copy()
        given = state["_custom_filter"]
        if given is not None:
            try:
                pickle.dumps(given)
            except Exception as error:  # pickling raises many kinds of errors
                state["_custom_filter"] = None
                state["_filter_lost"] = f"{given!r:.60} cannot be pickled ({error})"
        return state

    @classmethod
    def set_logger(cls, level: int = logging.DEBUG) -> None:
        """Sets the level and format of the root logger, as the original's tools expect
        of their first line; replaces the handlers the root logger had."""
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", datefmt="%H:%M:%S")
        )
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(level)

    def apply(self, settings: Mapping[str, Any] | None = None) -> None:
        """Merges nested dicts: ``{'bus': {'address': x}}`` sets ``bus.address``, at any
        depth; ``apply()`` with nothing applies nothing."""
        flat: dict[str, Any] = {}
        _flatten(settings or {}, "", flat)
        with self._lock:
            self._values.update(flat)

    def clear(self) -> None:
        """Removes every setting."""
        with self._lock:
            self._values.clear()

    @property
    def is_empty(self) -> bool:
        """True when no setting is set; a property, as in the original: ``if context.is_empty:``."""
        return len(self._values) == 0

    def check(
        self,
        key: str,
        default: Any = None,
        is_mandatory: bool = False,
        validate: Callable[[Any], Any] | None = None,
        filter: bool = False,
    ) -> None:
        """Checks one setting, and updates the context accordingly, as the original does.

        A key that holds settings below it (``db.conn`` when ``db.conn.host`` is set)
        is present, its value the dict that ``get()`` gives.

        - with a ``default``, a key missing or None is set to it, even if ``is_mandatory``;
        - without one, a missing key raises ``KeyError`` when ``is_mandatory`` or
          ``validate`` is given, and else reads None: nothing is stored, no error;
        - ``validate(value) is False`` raises ``ValueError``;
        - with ``filter``, the value is replaced by ``filter(value, default)`` (see
          ``Context(filter=...)``), missing or None values too. The default filter
          replaces ``'$NAME'`` by the environment variable ``NAME``; when it is not
          set, by ``default`` (itself read from the environment when it is a
          ``'$NAME'``), and else by None, with a warning: a placeholder is never
          taken for the secret it names.

        Args:
            key: the dotted key, such as ``'bus.address'``.
            default: the value a missing or None key takes.
            is_mandatory: without a default, a missing key is an error.
            validate: a function of the value; ``False`` from it is an error.
            filter: the value is replaced by ``filter(value, default)``.

        Raises:
            KeyError: a missing key without a default, when ``is_mandatory`` or
                ``validate`` is given.
            ValueError: ``validate(value)`` returned False.
        """
        with self._lock:
            value = self._lookup(key)
            if value is None:
                if default is not None:
                    value = default
                    self._values[key] = value
                elif is_mandatory or validate is not None:
                    raise KeyError(f"Missing mandatory setting '{key}': set it in the context")
            # The original's order: the value is validated as written, then filtered.
            if validate is not None and validate(value) is False:
                raise ValueError(f"Invalid value for setting '{key}': {value!r}")
            if filter:
                filtered = self._filtered(key, value, default)
                if filtered is not None or key in self._values:
                    self._values[key] = filtered

    def _lookup(self, key: str) -> Any:
        """The value of ``key``; for a key with settings below it, the dict of them."""
        value = self._values.get(key)
        if value is not None:
            return value
        prefix = key + "."
        below = {k[len(prefix) :]: v for k, v in self._values.items() if k.startswith(prefix)}
        return below or None

    def _filtered(self, key: str, value: Any, default: Any) -> Any:
        if self._custom_filter is not None:
            return self._custom_filter(value, default)
        if self._filter_lost:
            raise TypeError(
                f"check('{key}', filter=True): the filter given to Context() stayed in the "
                f"process that made it: {self._filter_lost}; define it at module level"
            )
        if value is None:
            log.warning("check('%s', filter=True): the setting is not set", key)
            return None
        return self._filter(value, default, f"check('{key}', filter=True)")

    @classmethod
    def _filter(cls, value: Any, default: Any = None, where: str = "Context._filter()") -> Any:
        """The default filter, by the original's name: ``'$NAME'`` is the environment
        variable ``NAME``; when it is not set, ``default`` (itself read from the
        environment when it is a ``'$NAME'``), else None, with a warning: a
        placeholder is never taken for the secret it names. Other values stay."""
        if not _names_variable(value):
            return value
        name = value[1:]
        if name in os.environ:
            return os.environ[name]
        if default is not None and default != value:
            if not _names_variable(default):
                return default
            if default[1:] in os.environ:
                return os.environ[default[1:]]
        log.warning("%s: the environment variable %s is not set; the setting is None", where, name)
        return None

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; for a prefix such as ``'bus'``, a dict of the keys below it."""
        value = self._lookup(key)
        return default if value is None else value

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

    def increment(self, key: str, delta: int | float = 1) -> int | float:
        """Adds ``delta`` to a counter, atomically, and returns the result.

        A counter missing, or holding something that is not an integer (a float too),
        starts from 0, as in the original.
        """
        with self._lock:  # the manager's lock: atomic across processes
            value: int | float = self._values.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool):
                value = 0
            value += delta
            self._values[key] = value
            return value

    def decrement(self, key: str, delta: int | float = 1) -> int | float:
        """Takes ``delta`` from a counter, as ``increment()`` adds it; returns the result."""
        return self.increment(key, -delta)

    def has(self, prefix: str) -> bool:
        """True when a key starts with ``prefix``, as in the original: a plain prefix,
        so ``has('spa')`` sees ``spark.room``; ``has('spark.')`` asks for a section."""
        keys = self._values.keys()  # one round trip to the manager, not one per key
        return any(key.startswith(prefix) for key in keys)

    def __repr__(self) -> str:
        return f"Context({dict(self._values)!r})"


def _names_variable(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$") and len(value) > 1


def _flatten(settings: Mapping[str, Any], prefix: str, into: dict[str, Any]) -> None:
    for key, value in settings.items():
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{key}.", into)
        else:
            into[f"{prefix}{key}"] = value
