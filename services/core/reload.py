"""Hot reload of a mounted config file, keeping the last good version when a new one is bad.

Kubernetes updates a mounted ConfigMap by swapping a ``..data`` symlink, which inotify
watches on the file itself miss; polling ``stat`` of the resolved path (inode, size, mtime)
is cheap and sees every update. A file that fails to parse or validate is reported (log,
``config_reload_failures_total``, :attr:`WatchedFile.last_error`) and the previous value
stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from services.core.metrics import counter

log = logging.getLogger(__name__)

T = TypeVar("T")

RELOAD_FAILURES = counter("config_reload_failures_total",
                          "Config files that changed but could not be loaded", ["config"])
RELOADS = counter("config_reloads_total", "Config files loaded after a change", ["config"])

Fingerprint = tuple[int, int, int, int]


def _fingerprint(path: Path) -> Fingerprint | None:
    """Identity of the file's current content; for a folder, of all its entries."""
    try:
        if path.is_dir():
            parts = [_fingerprint(child) for child in sorted(path.iterdir())
                     if not child.name.startswith(".")]
            return (len(parts), hash(tuple(parts)), 0, 0)
        st = os.stat(path)  # follows the ..data symlink swap
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class WatchedFile(Generic[T]):
    """The parsed content of ``path``, re-read when it changes.

    ``parse`` turns the path into a value or raises; ``initial`` stands in while the file
    does not exist (None: the file must exist at start).
    """

    def __init__(self, name: str, path: Path, parse: Callable[[Path], T], *,
                 initial: T | None = None) -> None:
        self.name = name
        self.path = path
        self._parse = parse
        self._listeners: list[Callable[[T], None]] = []
        self.last_error: str | None = None
        self._fingerprint = _fingerprint(path)
        if self._fingerprint is None:
            if initial is None:
                raise FileNotFoundError(f"{name}: {path} does not exist")
            self._value = initial
        else:
            self._value = parse(path)  # a bad file at start-up is fatal: nothing to fall back to

    @property
    def value(self) -> T:
        return self._value

    def subscribe(self, listener: Callable[[T], None]) -> None:
        """Call ``listener(new_value)`` after each successful reload."""
        self._listeners.append(listener)

    def check(self) -> bool:
        """Reload if the file changed; True when a new value took effect."""
        fingerprint = _fingerprint(self.path)
        if fingerprint == self._fingerprint or fingerprint is None:
            return False
        self._fingerprint = fingerprint
        try:
            value = self._parse(self.path)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            RELOAD_FAILURES.labels(self.name).inc()
            log.error("%s: %s is invalid; keeping the previous version: %s", self.name,
                      self.path, self.last_error)
            return False
        self._value = value
        self.last_error = None
        RELOADS.labels(self.name).inc()
        log.info("%s: reloaded %s", self.name, self.path)
        for listener in self._listeners:
            listener(value)
        return True

    async def watch(self, interval: float) -> None:
        """Poll forever (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # a listener failing must not end the watch
                log.exception("%s: reload listener failed", self.name)
