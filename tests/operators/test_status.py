"""Conditions follow the Kubernetes convention, and CommerceService status says what is
wrong in words a platform engineer can act on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operators.commerceservice.render import RouteConflict
from operators.commerceservice.spec import CommerceServiceStatus
from operators.commerceservice.status import MissingReference, build_status, invalid_spec_status
from operators.conditions import (
    ConditionStatus,
    ConditionUpdate,
    degraded,
    find_condition,
    is_condition_true,
    not_ready,
    progressing,
    ready,
    set_conditions,
)
from operators.workloads import RolloutState, deployment_progress

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _deployment(*, generation: int = 2, observed: int = 2, replicas: int = 3, ready: int = 3,
                updated: int = 3, available: int = 3, total: int | None = None,
                deadline_exceeded: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Available", "status": "True"}]
    if deadline_exceeded:
        conditions.append({"type": "Progressing", "status": "False",
                           "reason": "ProgressDeadlineExceeded",
                           "message": 'ReplicaSet "x" has timed out progressing.'})
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"image": "kommerce:1.2.0"}]}}},
        "status": {"observedGeneration": observed, "replicas": total or updated,
                   "readyReplicas": ready, "updatedReplicas": updated,
                   "availableReplicas": available, "conditions": conditions},
    }


def _by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# --- conditions -------------------------------------------------------------------------


def test_last_transition_time_moves_only_when_status_changes() -> None:
    first = set_conditions(None, [ready("Available", "3 of 3")], observed_generation=1, now=T0)
    same = set_conditions(first, [ready("Available", "4 of 4")], observed_generation=2, now=T1)
    assert same[0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert (same[0]["message"], same[0]["observedGeneration"]) == ("4 of 4", 2)
    flipped = set_conditions(same, [not_ready("RollingOut", "1 of 3")], observed_generation=3,
                             now=T1)
    assert flipped[0]["lastTransitionTime"] == "2024-05-01T12:05:00Z"


def test_conditions_are_ordered_ready_progressing_degraded_then_others() -> None:
    conditions = set_conditions(
        [{"type": "Custom", "status": "True", "reason": "X", "message": "",
          "lastTransitionTime": "2024-01-01T00:00:00Z"}],
        [degraded(False, "AsExpected", ""), progressing(True, "RollingOut", ""),
         ready("Available", "")], observed_generation=1, now=T0)
    assert [c["type"] for c in conditions] == ["Ready", "Progressing", "Degraded", "Custom"]


def test_set_conditions_leaves_the_existing_list_untouched() -> None:
    existing = [{"type": "Ready", "status": "False", "reason": "Creating", "message": "",
                 "lastTransitionTime": "2024-01-01T00:00:00Z"}]
    set_conditions(existing, [ready("Available", "")], observed_generation=1, now=T0)
    assert existing[0]["status"] == "False"


def test_condition_reasons_must_be_camel_case() -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        ConditionUpdate("Ready", ConditionStatus.TRUE, "not ok", "")


def test_find_and_is_true_read_a_condition_list() -> None:
    conditions = set_conditions(None, [ready("Available", "")], observed_generation=1, now=T0)
    assert find_condition(conditions, "Ready") is not None
    assert is_condition_true(conditions, "Ready")
    assert not is_condition_true(conditions, "Degraded")
    assert not is_condition_true(None, "Ready")


# --- Deployment progress ------------------------------------------------------------------


@pytest.mark.parametrize(("deployment", "state"), [
    (None, RolloutState.MISSING),
    (_deployment(observed=1), RolloutState.PENDING),
    (_deployment(updated=1, available=1), RolloutState.ROLLING),
    (_deployment(total=4), RolloutState.ROLLING),
    (_deployment(available=2), RolloutState.ROLLING),
    (_deployment(available=1, deadline_exceeded=True), RolloutState.FAILED),
    (_deployment(), RolloutState.COMPLETE),
])
def test_deployment_progress_judges_like_kubectl_rollout_status(
        deployment: dict[str, Any] | None, state: RolloutState) -> None:
    assert deployment_progress(deployment).state is state


# --- CommerceService status ---------------------------------------------------------------


def test_complete_rollout_is_ready_and_not_degraded() -> None:
    status = build_status(generation=2, namespace="shop", deployment=_deployment(), now=T0)
    conditions = _by_type(status)
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert (status["observedGeneration"], status["readyReplicas"], status["image"]) \
        == (2, 3, "kommerce:1.2.0")
    CommerceServiceStatus.model_validate(status)


def test_rolling_out_is_progressing_and_not_ready() -> None:
    status = build_status(generation=2, namespace="shop",
                          deployment=_deployment(updated=1, available=1), now=T0)
    conditions = _by_type(status)
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False",
                                                                             "RollingOut")
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["Ready"]["message"] == "1 of 3 Pods run the new template"


def test_missing_secret_is_degraded_with_a_message_naming_it_and_the_fix() -> None:
    status = build_status(generation=1, namespace="shop", deployment=None,
                          missing=[MissingReference("Secret", "product-db")], now=T0)
    degraded_condition = _by_type(status)["Degraded"]
    assert (degraded_condition["status"], degraded_condition["reason"]) == ("True",
                                                                           "SecretNotFound")
    assert degraded_condition["message"].startswith(
        "Secret product-db not found in namespace shop: create it, or mark the reference "
        "optional")
    assert _by_type(status)["Ready"]["reason"] == "SecretNotFound"  # never Ready without it
    CommerceServiceStatus.model_validate(status)


def test_missing_secret_and_config_map_share_one_reason() -> None:
    status = build_status(generation=1, namespace="shop", deployment=None, now=T0,
                          missing=[MissingReference("Secret", "a"),
                                   MissingReference("ConfigMap", "b")])
    assert _by_type(status)["Degraded"]["reason"] == "ReferenceNotFound"


def test_rollout_past_its_deadline_is_degraded_and_not_progressing() -> None:
    status = build_status(generation=2, namespace="shop", now=T0,
                          deployment=_deployment(available=1, deadline_exceeded=True))
    conditions = _by_type(status)
    assert conditions["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert conditions["Progressing"]["status"] == "False"
    assert "timed out progressing" in conditions["Degraded"]["message"]


def test_a_route_conflict_is_degraded_but_still_ready() -> None:
    conflict = RouteConflict("/api/x", ("a-service", "b-service"))
    status = build_status(generation=2, namespace="shop", deployment=_deployment(),
                          conflicts=[conflict], now=T0)
    conditions = _by_type(status)
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "RouteConflict"
    assert "remove it from b-service" in conditions["Degraded"]["message"]


def test_an_unchanged_reconcile_produces_an_identical_status() -> None:
    first = build_status(generation=2, namespace="shop", deployment=_deployment(), now=T0)
    again = build_status(generation=2, namespace="shop", deployment=_deployment(),
                         previous_conditions=first["conditions"], now=T1)
    assert again == first


def test_invalid_spec_status_keeps_everything_and_says_why() -> None:
    status = invalid_spec_status(generation=4, message="spec.image: field required", now=T0)
    conditions = _by_type(status)
    assert conditions["Degraded"]["reason"] == "InvalidSpec"
    assert conditions["Ready"]["message"] == "spec.image: field required"
    assert status["observedGeneration"] == 4
