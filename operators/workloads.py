"""Reading a Deployment's status the way ``kubectl rollout status`` does, as a pure function.

Both the CommerceService status (``Ready`` only when the rollout is complete) and the
blue-green flip (traffic moves only to a colour that is fully Available at its current
revision) need the same judgement, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RolloutState(StrEnum):
    """How far a Deployment is from its spec."""

    MISSING = "Missing"  # not there (yet)
    PENDING = "Pending"  # the Deployment controller has not seen the latest generation
    ROLLING = "Rolling"  # Pods are being replaced or brought up
    COMPLETE = "Complete"  # every wanted Pod runs the current template and is available
    FAILED = "Failed"  # progressDeadlineSeconds passed without progress


@dataclass(frozen=True)
class DeploymentProgress:
    """A verdict on one Deployment, with the counts behind it and a sentence for people."""

    state: RolloutState
    message: str
    desired: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    image: str | None = None

    @property
    def complete(self) -> bool:
        """True when the Deployment is fully available at its current revision."""
        return self.state is RolloutState.COMPLETE


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    conditions: Iterable[Mapping[str, Any]] = status.get("conditions") or ()
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def deployment_progress(deployment: Mapping[str, Any] | None) -> DeploymentProgress:
    """Judge a Deployment object (as read from the API) the way ``kubectl rollout status``
    does: latest generation observed, every replica updated, no old ones left, all
    available, and not past its progress deadline."""
    if deployment is None:
        return DeploymentProgress(RolloutState.MISSING, "the Deployment does not exist yet")
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    counts = {
        "desired": int(spec.get("replicas", 1)),
        "ready": int(status.get("readyReplicas", 0)),
        "updated": int(status.get("updatedReplicas", 0)),
        "available": int(status.get("availableReplicas", 0)),
        "image": containers[0].get("image"),
    }
    total = int(status.get("replicas", 0))
    generation = int((deployment.get("metadata") or {}).get("generation", 0))
    desired, updated, available = counts["desired"], counts["updated"], counts["available"]

    if int(status.get("observedGeneration", 0)) < generation:
        return DeploymentProgress(RolloutState.PENDING,
                                  "waiting for the Deployment controller to see the change",
                                  **counts)
    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return DeploymentProgress(
            RolloutState.FAILED,
            f"rollout exceeded its progress deadline with {available} of {desired} Pods "
            f"available: {progressing.get('message', '')}".rstrip(": "), **counts)
    if updated < desired:
        return DeploymentProgress(RolloutState.ROLLING,
                                  f"{updated} of {desired} Pods run the new template", **counts)
    if total > updated:
        return DeploymentProgress(RolloutState.ROLLING,
                                  f"{total - updated} old Pods are still terminating", **counts)
    if available < updated:
        return DeploymentProgress(RolloutState.ROLLING,
                                  f"{available} of {updated} updated Pods are available",
                                  **counts)
    return DeploymentProgress(RolloutState.COMPLETE,
                              f"{available} of {desired} Pods available", **counts)
