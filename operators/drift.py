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


# Fields that identify an element of a list the operator renders (ports by name and number,
# containers and env by name, volume mounts by path). Server-side apply merges such lists
# by key, so an element a hand edit added or renamed survives an apply, or makes it fail
# (two ports named ``http``); only replacing the whole list restores the rendered one.
_IDENTITY_KEYS = ("name", "port", "containerPort", "mountPath", "type")


def list_replacements(desired: Any, live: Any, path: str = "") -> list[dict[str, Any]]:
    """JSON-patch operations that set each rendered list whose *shape* drifted (different
    length, or an element identified differently) back to the rendered list.

    Values inside elements are not looked at: server-side apply with force puts those
    back, and a value the API server writes differently (``0.5`` for ``500m``) would
    otherwise be replaced on every event. Metadata is left to server-side apply.
    """
    if isinstance(desired, dict) and isinstance(live, dict):
        ops: list[dict[str, Any]] = []
        for key, value in desired.items():
            if path == "" and key in ("metadata", "apiVersion", "kind"):
                continue
            pointer = f"{path}/{_escape(str(key))}"
            if key not in live:
                if isinstance(value, list):
                    ops.append({"op": "add", "path": pointer, "value": value})
                continue
            ops.extend(list_replacements(value, live[key], pointer))
        return ops
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired) or any(
                _identity(d) != _identity(item) for d, item in zip(desired, live, strict=True)):
            return [{"op": "replace", "path": path, "value": desired}]
        ops = []
        for index, (d, item) in enumerate(zip(desired, live, strict=True)):
            ops.extend(list_replacements(d, item, f"{path}/{index}"))
        return ops
    return []


def _identity(element: Any) -> tuple[str, ...]:
    if not isinstance(element, dict):
        return (str(element),)
    return tuple(str(element.get(key)) for key in _IDENTITY_KEYS if key in element)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
