"""Conflicts between resources follow one rule, whatever the kinds: the oldest claimant
owns the thing (ties by name), every other one is told who owns it and touches nothing."""

from __future__ import annotations

from typing import Any

from operators.bluegreen.conflict import REASON, conflict_message, rollout_conflict
from operators.circuitbreaker.render import PolicyRef, policy_conflicts, policy_for_target
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.circuitbreaker.status import build_status, policy_stamp
from operators.commerceservice.render import RoutedService, route_conflicts, route_table
from operators.commerceservice.spec import CommerceServiceSpec
from operators.conflicts import Claimant, conflicts, owner, ranked

from .test_status import T0

EARLY, LATE = "2026-01-01T10:00:00Z", "2026-01-02T10:00:00Z"


def test_the_oldest_claimant_owns_and_ties_go_by_name() -> None:
    claimants = [Claimant(LATE, "alpha"), Claimant(EARLY, "zeta"), Claimant(EARLY, "beta")]
    assert owner(claimants) == Claimant(EARLY, "beta")
    assert [c.name for c in ranked(claimants)] == ["beta", "zeta", "alpha"]
    (conflict,) = conflicts({"thing": claimants, "alone": [Claimant(LATE, "solo")]})
    assert conflict.claimed == "thing" and conflict.names == ("beta", "zeta", "alpha")
    assert conflict.loses("alpha") and conflict.loses("zeta") and not conflict.loses("beta")


def _rollout(name: str, created: str, target: str = "product-service") -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"serviceRef": {"name": target}}}


def test_a_second_rollout_on_one_service_loses_to_the_older_one_whatever_its_name() -> None:
    rollouts = [_rollout("zz-first", EARLY), _rollout("aa-second", LATE),
                _rollout("other", LATE, target="user-service")]
    assert rollout_conflict("zz-first", rollouts) is None
    assert rollout_conflict("other", rollouts) is None
    conflict = rollout_conflict("aa-second", rollouts)
    assert conflict is not None and conflict.owner.name == "zz-first"
    message = conflict_message(conflict, "aa-second")
    assert "CommerceService product-service is already released by BlueGreenRollout " \
           "zz-first" in message
    assert "aa-second touches nothing" in message
    assert REASON == "RolloutConflict"


def _policy(name: str, created: str, target: str = "payment-service",
            **spec: object) -> PolicyRef:
    return PolicyRef(name, f"uid-{name}", CircuitBreakerPolicySpec.model_validate(
        {"targetRef": {"name": target}, **spec}), created=created)


def test_the_older_policy_on_a_target_applies_and_the_younger_is_degraded_naming_it() -> None:
    policies = [_policy("alpha", LATE, timeout="4s"), _policy("zeta", EARLY, timeout="9s")]
    chosen = policy_for_target(policies, "payment-service")
    assert chosen is not None and chosen.timeout == "9s"
    assert (policy_stamp(policies, "payment-service") or "").startswith("zeta@")
    (conflict,) = policy_conflicts(policies)
    assert conflict.policies == ("zeta", "alpha")
    status = build_status(name="alpha", namespace="shop", spec=policies[0].spec,
                          policies=policies, target_found=True, in_force=True, generation=1,
                          previous_conditions=None, now=T0)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "PolicyConflict")
    assert "zeta (the oldest) applies" in degraded["message"]
    assert status["reason"] == "PolicyConflict"


def test_the_older_service_keeps_a_path_prefix_another_one_also_declares() -> None:
    def service(name: str, created: str) -> RoutedService:
        spec = CommerceServiceSpec.model_validate(
            {"component": "product", "image": "shop:1", "routes": [{"pathPrefix": "/api/x"}]})
        return RoutedService(name, f"uid-{name}", spec, created=created)

    services = [service("aaa", LATE), service("zzz", EARLY)]
    (conflict,) = route_conflicts(services)
    assert conflict.services == ("zzz", "aaa")
    (route,) = route_table("shop", services).routes
    assert route.service == "zzz"
