"""CommerceService status from what the handler observed; pure, so every case is a test.

The handler reads the Deployment and checks the referenced Secrets and ConfigMaps, then
calls :func:`build_status` and patches the result. Messages say what to do, because
``kubectl describe`` is where a platform engineer looks first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from operators.commerceservice.render import RouteConflict
from operators.conditions import (
    ConditionUpdate,
    degraded,
    not_ready,
    progressing,
    ready,
    set_conditions,
    summary,
)
from operators.workloads import RolloutState, deployment_progress


@dataclass(frozen=True)
class MissingReference:
    """A Secret or ConfigMap the spec requires that does not exist."""

    kind: str  # "Secret" or "ConfigMap"
    name: str


def _missing_message(missing: Sequence[MissingReference], namespace: str) -> str:
    names = ", ".join(f"{ref.kind} {ref.name}" for ref in missing)
    return (f"{names} not found in namespace {namespace}: create it, or mark the reference "
            "optional in the spec; Pods cannot start without it")


def _missing_reason(missing: Sequence[MissingReference]) -> str:
    kinds = {ref.kind for ref in missing}
    return f"{kinds.pop()}NotFound" if len(kinds) == 1 else "ReferenceNotFound"


def build_status(*, generation: int, namespace: str, deployment: Mapping[str, Any] | None,
                 missing: Sequence[MissingReference] = (),
                 conflicts: Sequence[RouteConflict] = (),
                 previous_conditions: Sequence[Mapping[str, Any]] | None = None,
                 now: datetime) -> dict[str, Any]:
    """The whole ``status`` for one reconcile.

    ``Ready`` follows the Deployment (complete rollout, every Pod available), except that a
    service missing a required Secret or ConfigMap is never Ready: its Pods cannot start
    with it missing (whatever a Pod's status claims), and the gateway is not given its
    routes. ``Degraded`` is True for what needs a person: a missing Secret or ConfigMap, a
    rollout past its deadline, a path prefix another service also claims.
    """
    progress = deployment_progress(deployment)
    updates: list[ConditionUpdate] = []

    if missing:
        message = _missing_message(missing, namespace)
        updates.append(not_ready(_missing_reason(missing), message))
        updates.append(progressing(False, _missing_reason(missing), message))
    elif progress.state is RolloutState.COMPLETE:
        updates.append(ready("Available", progress.message))
        updates.append(progressing(False, "RolloutComplete", progress.message))
    elif progress.state is RolloutState.FAILED:
        updates.append(not_ready("ProgressDeadlineExceeded", progress.message))
        updates.append(progressing(False, "ProgressDeadlineExceeded", progress.message))
    else:
        reason = "Creating" if progress.state is RolloutState.MISSING else "RollingOut"
        updates.append(not_ready(reason, progress.message))
        updates.append(progressing(True, reason, progress.message))

    problems: list[tuple[str, str]] = []
    if missing:
        problems.append((_missing_reason(missing), _missing_message(missing, namespace)))
    if progress.state is RolloutState.FAILED:
        problems.append(("ProgressDeadlineExceeded", progress.message))
    problems.extend(("RouteConflict", conflict.message) for conflict in conflicts)
    if problems:
        updates.append(degraded(True, problems[0][0], "; ".join(m for _, m in problems)))
    else:
        updates.append(degraded(False, "AsExpected", "nothing needs attention"))

    conditions = set_conditions(previous_conditions, updates,
                                observed_generation=generation, now=now)
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions,
                              **summary(conditions)}
    if deployment is not None:
        status |= {"replicas": progress.desired, "readyReplicas": progress.ready,
                   "updatedReplicas": progress.updated}
        if progress.image is not None:
            status["image"] = progress.image
    return status


def invalid_spec_status(*, generation: int, message: str,
                        previous_conditions: Sequence[Mapping[str, Any]] | None = None,
                        now: datetime) -> dict[str, Any]:
    """Status for a spec the operator refuses (it got past the CRD schema but not the
    model, e.g. after a CRD downgrade): nothing is changed, and the message says why."""
    updates = [
        not_ready("InvalidSpec", message),
        progressing(False, "InvalidSpec", "the operator will act once the spec is fixed"),
        degraded(True, "InvalidSpec", message),
    ]
    conditions = set_conditions(previous_conditions, updates,
                                observed_generation=generation, now=now)
    return {"observedGeneration": generation, "conditions": conditions, **summary(conditions)}
