"""Is a live object still what we rendered? Pure, so drift repair never fights the cluster.

The live object carries more than we sent: defaults the API server fills in, status, fields
owned by other managers (an HPA's replica count). None of that is drift. Drift is a field we
render whose live value is different, or missing.
"""

from __future__ import annotations

from typing import Any

# Server-populated metadata that never appears in a rendered manifest.
_IGNORED_METADATA = {"resourceVersion", "uid", "generation", "creationTimestamp",
                     "managedFields", "selfLink", "deletionTimestamp", "finalizers"}


def differs(desired: Any, live: Any) -> bool:
    """True when some value in ``desired`` is absent from or different in ``live``."""
    return not _contains(live, desired, path=())


def _contains(live: Any, desired: Any, path: tuple[str, ...]) -> bool:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        for key, value in desired.items():
            if path == ("metadata",) and key in _IGNORED_METADATA:
                continue
            if key not in live or not _contains(live[key], value, (*path, str(key))):
                return False
        return True
    if isinstance(desired, list):
        # Lists we render (containers, ports, env, routes) are ordered and complete:
        # same length, and each element contained in its counterpart.
        return isinstance(live, list) and len(live) == len(desired) and all(
            _contains(lv, dv, path) for lv, dv in zip(live, desired, strict=True))
    return _same_scalar(live, desired)


def _same_scalar(live: Any, desired: Any) -> bool:
    if live == desired:
        return True
    # The API server may return an int-or-string as the other form (e.g. a port or
    # maxSurge of 1 vs "1"); compare their text.
    return isinstance(live, int | str) and isinstance(desired, int | str) and \
        str(live) == str(desired)
