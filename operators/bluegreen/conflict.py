"""Two BlueGreenRollouts on one CommerceService: the rule of ``operators.conflicts``; pure.

A CommerceService has one Deployment per colour, one Service, one preview Service, one
VirtualService and one DestinationRule; two rollouts writing them take the controller
reference from each other on every reconcile and scale the colours back and forth. So only
the owner (the oldest rollout naming the service, then first by name) reconciles; every
other one is ``Degraded`` with reason :data:`REASON`, naming the owner, and writes nothing
but its own status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from operators.conflicts import Claimant, Conflict, conflict_of, conflicts

REASON = "RolloutConflict"


def claimant(body: Mapping[str, Any]) -> Claimant:
    """A rollout as a claimant of its target (its creation time and name)."""
    meta = body.get("metadata") or {}
    return Claimant(str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def target_of(body: Mapping[str, Any]) -> str | None:
    """The CommerceService a rollout names, or None."""
    target = ((body.get("spec") or {}).get("serviceRef") or {}).get("name")
    return str(target) if target else None


def rollout_conflict(name: str, rollouts: Iterable[Mapping[str, Any]]
                     ) -> Conflict[str] | None:
    """The conflict ``name`` loses among the namespace's ``rollouts`` (its target owned by
    an older one), or None. Rollouts being deleted still hold their target until they are
    gone: the hand-back is theirs to finish."""
    claims: dict[str, list[Claimant]] = {}
    for body in rollouts:
        target = target_of(body)
        if target is not None:
            claims.setdefault(target, []).append(claimant(body))
    return conflict_of(name, conflicts(claims))


def conflict_message(conflict: Conflict[str], name: str) -> str:
    """What the losing rollout reports: who owns the service and what to do."""
    return (f"CommerceService {conflict.claimed} is already released by BlueGreenRollout "
            f"{conflict.owner.name} (the oldest rollout naming it); {name} touches nothing "
            f"until {conflict.owner.name} is deleted or {name}'s spec.serviceRef names "
            "another service")
