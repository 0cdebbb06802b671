"""CircuitBreakerPolicy -> callers' client-breaker settings; pure, no I/O.

The mesh side of a policy is merged into the target's DestinationRule and VirtualService by
``operators.commerceservice.render.render(..., breaker=...)`` (via ``operators.istio``), so
there is one DestinationRule per service whoever contributes to it. The client side is one
ConfigMap per namespace, a JSON file per target (:mod:`kommerce.contracts.breaker`), mounted
into every service's Pods: the kubelet refreshes the files in place and the shared HTTP
client hot-reloads them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from kommerce.contracts.breaker import (
    BREAKERS_CONFIGMAP,
    ClientBreakerSettings,
    breaker_file_name,
)
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.conflicts import Claimant
from operators.meta import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    PART_OF,
    object_meta,
    service_host,
    shared_owner_reference,
)
from operators.units import parse_duration

KIND = "CircuitBreakerPolicy"


@dataclass(frozen=True)
class PolicyRef:
    """One CircuitBreakerPolicy as the renderers need it."""

    name: str
    uid: str
    spec: CircuitBreakerPolicySpec
    created: str = ""  # metadata.creationTimestamp: the oldest policy on a target applies

    @property
    def claimant(self) -> Claimant:
        return Claimant(self.created, self.name)


REASON_CONFLICT = "PolicyConflict"


@dataclass(frozen=True)
class PolicyConflict:
    """Several policies target one service; the oldest (then first by name) applies, by
    the rule every kind shares (``operators.conflicts``)."""

    target: str
    policies: tuple[str, ...]

    @property
    def message(self) -> str:
        winner, *others = self.policies
        return (f"policies {', '.join(self.policies)} all target {self.target}; {winner} "
                f"(the oldest) applies, delete or retarget {', '.join(others)}")


def _by_target(policies: Sequence[PolicyRef]) -> dict[str, list[PolicyRef]]:
    targets: dict[str, list[PolicyRef]] = {}
    for policy in sorted(policies, key=lambda p: p.claimant):
        targets.setdefault(policy.spec.target_ref.name, []).append(policy)
    return dict(sorted(targets.items()))


def policy_for_target(policies: Sequence[PolicyRef],
                      target: str) -> CircuitBreakerPolicySpec | None:
    """The policy that governs ``target`` (the oldest if several do), for
    ``commerceservice.render.render(..., breaker=...)``."""
    chosen = _by_target(policies).get(target)
    return chosen[0].spec if chosen else None


def policy_conflicts(policies: Sequence[PolicyRef]) -> list[PolicyConflict]:
    """Targets governed by more than one policy, for a ``Degraded`` condition on the rest."""
    return [PolicyConflict(target, tuple(p.name for p in chosen))
            for target, chosen in _by_target(policies).items() if len(chosen) > 1]


def _seconds(duration: str) -> float:
    return float(parse_duration(duration))


def client_settings(policy: PolicyRef, namespace: str) -> ClientBreakerSettings:
    """What a caller's breaker for the target needs, in plain numbers (seconds, percent)."""
    client = policy.spec.client
    target = policy.spec.target_ref.name
    return ClientBreakerSettings(
        policy=policy.name,
        target=target,
        host=service_host(target, namespace),
        timeout_seconds=_seconds(client.timeout),
        error_threshold_percentage=client.error_threshold_percentage,
        reset_timeout_seconds=_seconds(client.reset_timeout),
        rolling_window_seconds=_seconds(client.rolling_window),
        rolling_buckets=client.rolling_buckets,
        volume_threshold=client.volume_threshold,
    )


def render_client_breakers(namespace: str, policies: Sequence[PolicyRef],
                           targets: Collection[str] | None = None) -> dict[str, Any]:
    """The ConfigMap of every target's client-breaker settings in ``namespace``: key
    ``<target>.json``, only for ``targets`` that exist (all when None), so callers never
    load settings for a service that is not there. Every policy is a non-controller owner,
    so the ConfigMap goes with the last of them and deleting one policy only drops its own
    file."""
    data = {
        breaker_file_name(target): client_settings(chosen[0], namespace).to_json()
        for target, chosen in _by_target(policies).items()
        if targets is None or target in targets
    }
    owners = [shared_owner_reference(KIND, p.name, p.uid)
              for p in sorted(policies, key=lambda p: p.name)]
    labels = {LABEL_NAME: "circuit-breakers", LABEL_COMPONENT: "client-config",
              LABEL_PART_OF: PART_OF, LABEL_MANAGED_BY: MANAGED_BY}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(BREAKERS_CONFIGMAP, namespace, labels, owners),
        "data": data,
    }
