"""Status says what the cluster shows, in one place ``kubectl get`` prints: no Ready beside
a missing Secret, no breaker file for a missing target, no Stable beside Degraded, the
same last flip in ``rollout status`` and ``rollout history``; and drift repair replaces a
list a hand edit reshaped, which server-side apply alone cannot."""

from __future__ import annotations

from typing import Any

from operators import crdgen
from operators.circuitbreaker.render import PolicyRef, render_client_breakers
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.status import MissingReference, build_status
from operators.conditions import SUMMARY_LENGTH, degraded, ready, set_conditions, summary
from operators.drift import list_replacements

from .test_status import T0, _by_type, _deployment


def test_a_service_missing_its_secret_is_not_ready_even_when_its_pods_say_so() -> None:
    status = build_status(generation=1, namespace="shop", deployment=_deployment(), now=T0,
                          missing=[MissingReference("Secret", "user-db")])
    conditions = _by_type(status)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "SecretNotFound"
    assert conditions["Degraded"]["status"] == "True"
    assert (status["reason"], status["readyReplicas"]) == ("SecretNotFound", 3)
    assert "Secret user-db not found in namespace shop" in status["message"]


def test_the_summary_shows_degraded_first_then_ready_and_is_cut_short() -> None:
    both = set_conditions(None, [ready("Available", "3 of 3 Pods available"),
                                 degraded(True, "RouteConflict", "x" * 1000)],
                          observed_generation=1, now=T0)
    assert summary(both)["reason"] == "RouteConflict"
    assert len(summary(both)["message"]) == SUMMARY_LENGTH + 3
    fine = set_conditions(None, [ready("Available", "3 of 3 Pods available"),
                                 degraded(False, "AsExpected", "nothing needs attention")],
                          observed_generation=1, now=T0)
    assert summary(fine) == {"reason": "Available", "message": "3 of 3 Pods available"}
    assert summary(None) == {}


def test_every_kind_prints_ready_reason_and_message_and_degraded_beside_them() -> None:
    for resource in crdgen.RESOURCES:
        columns = [c.name for c in resource.printer_columns]
        assert columns[-5:] == ["Ready", "Degraded", "Reason", "Age", "Message"], resource.kind
        paths = {c.name: c.json_path for c in resource.printer_columns}
        assert paths["Reason"] == ".status.reason"
        assert paths["Degraded"] == '.status.conditions[?(@.type=="Degraded")].status'


def _policy(name: str, target: str) -> PolicyRef:
    return PolicyRef(name, f"uid-{name}", CircuitBreakerPolicySpec.model_validate(
        {"targetRef": {"name": target}}))


def test_no_breaker_file_is_written_for_a_target_that_does_not_exist() -> None:
    policies = [_policy("pay", "payment-service"), _policy("ghost", "no-such-service")]
    data = render_client_breakers("shop", policies, {"payment-service", "user-service"})["data"]
    assert set(data) == {"payment-service.json"}


SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "user-service"},
    "spec": {"type": "ClusterIP", "selector": {"app": "user"},
             "ports": [{"name": "http", "appProtocol": "http", "protocol": "TCP", "port": 80,
                        "targetPort": "http"}]}}


def test_a_port_edited_by_a_merge_patch_is_replaced_as_a_whole() -> None:
    # kubectl patch --type merge -p '{"spec":{"ports":[{"name":"http","port":81}]}}'
    live = {"spec": {"type": "ClusterIP", "selector": {"app": "user"}, "clusterIP": "10.0.0.7",
                     "ports": [{"name": "http", "protocol": "TCP", "port": 81,
                                "targetPort": 81}]}}
    assert list_replacements(SERVICE, live) == [
        {"op": "replace", "path": "/spec/ports", "value": SERVICE["spec"]["ports"]}]


def test_an_extra_port_that_apply_would_keep_is_replaced_too() -> None:
    extra = {"name": "debug", "protocol": "TCP", "port": 9999, "targetPort": 9999}
    live = {"spec": {"type": "ClusterIP", "selector": {"app": "user"},
                     "ports": [*SERVICE["spec"]["ports"], extra]}}
    assert [op["path"] for op in list_replacements(SERVICE, live)] == ["/spec/ports"]


def test_values_inside_a_list_of_the_right_shape_are_left_to_server_side_apply() -> None:
    # Server-side apply with force puts the value back; replacing the list for it would
    # write on every event where the server words a value differently.
    live = {"spec": {"type": "ClusterIP", "selector": {"app": "user"},
                     "ports": [{**SERVICE["spec"]["ports"][0], "targetPort": 8000}]}}
    assert list_replacements(SERVICE, live) == []


def test_a_nested_list_is_replaced_at_its_own_path_and_a_missing_one_is_added() -> None:
    desired = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "A", "value": "1"}]}]}}, "volumes": [{"name": "v"}]}}
    live = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}}
    assert list_replacements(desired, live) == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/env",
         "value": [{"name": "A", "value": "1"}]},
        {"op": "add", "path": "/spec/volumes", "value": [{"name": "v"}]}]


def test_rollout_status_and_history_name_the_same_last_flip() -> None:
    from kommerce.rollout_cli import _last_flip, _takeover

    taken_over = {"lastFlipTime": "2026-01-01T10:00:00+00:00"}
    assert _last_flip(taken_over).startswith("none yet (traffic taken over from the "
                                             "CommerceService's own Deployment 2026-01-01")
    assert _takeover(taken_over) is not None
    flipped = {"lastFlipTime": "2026-01-02T10:00:00+00:00", "history": [
        {"time": "2026-01-02T10:00:00+00:00", "fromColor": "blue", "toColor": "green",
         "reason": "Promote"}]}
    assert "2026-01-02 10:00:00" in _last_flip(flipped)
    assert "blue -> green (Promote)" in _last_flip(flipped)
    assert _takeover(flipped) is None
    assert _last_flip({}) == "none yet"
