"""Putting a child back to exactly what was rendered, whatever the hand edit was.

Server-side apply with force restores every value the operator owns, but it *merges* lists
by their keys: a hand edit that renamed or renumbered a Service port leaves the edited
element in place beside the rendered one (or makes the apply fail outright, with two ports
named ``http``). So a repair is an apply, then — where the API server refused it or the
result still has a list of another shape — a JSON patch replacing those lists with the
rendered ones, then the apply again so the operator owns the fields once more. A repair
that still does not produce the rendered shape raises :class:`RepairFailed`, for the
caller to say so in status and an Event.
"""

from __future__ import annotations

from operators.drift import list_replacements
from operators.kube import KubeError, Manifest
from operators.runtime import kube

# What the apiserver answers when an apply cannot be merged into the live object:
# 422 Invalid (e.g. a duplicate port name), 409 Conflict.
_UNMERGEABLE = (409, 422)


class RepairFailed(RuntimeError):
    """The child could not be brought back to its rendered form; the message says why."""


def _identify(manifest: Manifest) -> tuple[str, str, str | None, str]:
    metadata = manifest["metadata"]
    return (manifest["apiVersion"], manifest["kind"], metadata.get("namespace"),
            metadata["name"])


def _replace_lists(desired: Manifest, live: Manifest) -> bool:
    """Replace the lists whose shape drifted; False when there was nothing to replace."""
    operations = list_replacements(desired, live)
    if not operations:
        return False
    kube().patch_json(*_identify(desired), operations)
    return True


def apply_or_replace(desired: Manifest) -> Manifest:
    """Server-side apply; when the apiserver cannot merge it into the live object, replace
    the reshaped lists and apply again. The reconcile's way of applying each child."""
    try:
        return kube().apply(desired)
    except KubeError as error:
        if error.status not in _UNMERGEABLE:
            raise
        live = kube().get(*_identify(desired))
        if live is None or not _replace_lists(desired, live):
            raise
    return kube().apply(desired)


def repair(desired: Manifest) -> Manifest:
    """Bring a drifted child back to ``desired``: apply (replacing lists the apply could
    not merge), then replace lists the apply merged into another shape. Raises
    :class:`RepairFailed` when the result still differs in shape, or the API refused."""
    kind, name = desired["kind"], desired["metadata"]["name"]
    try:
        applied = apply_or_replace(desired)
        if _replace_lists(desired, applied):
            applied = kube().apply(desired)
    except KubeError as error:
        raise RepairFailed(f"{kind} {name} could not be restored: {error.message}") from error
    left = list_replacements(desired, applied)
    if left:
        paths = ", ".join(operation["path"] for operation in left)
        raise RepairFailed(f"{kind} {name} still differs from the spec at {paths} after "
                           "the repair")
    return applied
