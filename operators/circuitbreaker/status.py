"""CircuitBreakerPolicy status and the stamp that wakes its target up; pure.

A policy's mesh settings are rendered by whoever writes the target's DestinationRule and
VirtualService (the CommerceService, or its BlueGreenRollout while one carries traffic), so
the policy handler only *tells* the target which policy governs it — an annotation whose
value changes with the policy's content — and then reads the live routes back to report
whether the settings are in force.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kommerce.contracts.breaker import BREAKERS_CONFIGMAP
from operators.circuitbreaker.render import (
    PolicyConflict,
    PolicyRef,
    policy_conflicts,
)
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.conditions import (
    ConditionUpdate,
    degraded,
    not_ready,
    progressing,
    ready,
    set_conditions,
    summary,
)
from operators.drift import differs
from operators.istio import traffic_settings
from operators.meta import service_host

# Not under ``kommerce.io/``: Kopf ignores its own prefix when deciding whether an object
# changed, and this annotation must trigger the target's reconcile.
POLICY_ANNOTATION = "circuitbreaker.kommerce.io/policy"


def policy_stamp(policies: Sequence[PolicyRef], target: str) -> str | None:
    """``<policy>@<content hash>`` of the policy governing ``target``, or None: a new value
    whenever the governing policy or its spec changes, so the target re-renders."""
    governing = sorted((p for p in policies if p.spec.target_ref.name == target),
                       key=lambda p: p.claimant)
    if not governing:
        return None
    wire = json.dumps(governing[0].spec.wire(), sort_keys=True, separators=(",", ":"))
    return f"{governing[0].name}@{hashlib.sha256(wire.encode()).hexdigest()[:12]}"


def settings_in_force(spec: CircuitBreakerPolicySpec, destination_rule: Mapping[str, Any] | None,
                      virtual_service: Mapping[str, Any] | None) -> bool:
    """True when the live DestinationRule carries the policy's pool and ejection limits and
    every route of the live VirtualService its timeout and retries."""
    if destination_rule is None or virtual_service is None:
        return False
    settings = traffic_settings(spec)
    wanted_rule = {"spec": {"trafficPolicy": {"connectionPool": settings.connection_pool,
                                              "outlierDetection": settings.outlier_detection}}}
    if differs(wanted_rule, dict(destination_rule)):
        return False
    routes = (virtual_service.get("spec") or {}).get("http") or []
    wanted_route = {"timeout": settings.timeout, "retries": settings.retries}
    return bool(routes) and not any(differs(wanted_route, route) for route in routes)


def _conflict_for(name: str, conflicts: Sequence[PolicyConflict]) -> PolicyConflict | None:
    return next((c for c in conflicts if name in c.policies[1:]), None)


def build_status(*, name: str, namespace: str, spec: CircuitBreakerPolicySpec,
                 policies: Sequence[PolicyRef], target_found: bool, in_force: bool,
                 generation: int, previous_conditions: Sequence[Mapping[str, Any]] | None,
                 now: datetime) -> dict[str, Any]:
    """The whole status for one reconcile; ``Ready`` only once the routes carry it."""
    target = spec.target_ref.name
    conflict = _conflict_for(name, policy_conflicts(policies))
    client = f"client settings are in ConfigMap {BREAKERS_CONFIGMAP}, key {target}.json"
    updates: list[ConditionUpdate]
    if conflict is not None:
        updates = [not_ready("PolicyConflict", conflict.message),
                   progressing(False, "PolicyConflict", conflict.message),
                   degraded(True, "PolicyConflict", conflict.message)]
    elif not target_found:
        message = (f"CommerceService {target} not found in namespace {namespace}: the mesh "
                   f"settings apply once it exists; {client}")
        updates = [not_ready("TargetNotFound", message),
                   progressing(False, "TargetNotFound", message),
                   degraded(True, "TargetNotFound", message)]
    elif not in_force:
        message = f"merging into the DestinationRule and VirtualService of {target}"
        updates = [not_ready("Merging", message), progressing(True, "Merging", message),
                   degraded(False, "AsExpected", "nothing needs attention")]
    else:
        message = (f"merged into DestinationRule and VirtualService {target} (timeout "
                   f"{spec.timeout}, eject after {spec.outlier_detection.consecutive_5xx_errors} "
                   f"consecutive 5xx for {spec.outlier_detection.base_ejection_time}); {client}")
        updates = [ready("InForce", message), progressing(False, "InForce", message),
                   degraded(False, "AsExpected", "nothing needs attention")]
    conditions = set_conditions(previous_conditions, updates,
                                observed_generation=generation, now=now)
    return {
        "observedGeneration": generation,
        "targetHost": service_host(target, namespace),
        "conditions": conditions,
        **summary(conditions),
    }
