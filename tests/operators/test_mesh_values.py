"""Every value that reaches an Istio resource is one Istio and Envoy accept: checked by
the CRD schema (CEL naming the offending value) and, the same way, by the operator before
it renders anything."""

from __future__ import annotations

import pytest

from operators import crdgen
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.istio import DEFAULT_RETRIES, traffic_settings
from operators.mesh_values import (
    ENVOY_RETRY_GRPC_ON,
    ENVOY_RETRY_ON,
    RETRY_ON_RULE,
    unknown_retry_conditions,
)
from operators.schema import InvalidSpec, parse_spec


def _policy(**spec: object) -> CircuitBreakerPolicySpec:
    return parse_spec(CircuitBreakerPolicySpec, {"targetRef": {"name": "pay"}, **spec})


@pytest.mark.parametrize("retry_on", [
    "5xx", "gateway-error,reset", "connect-failure,refused-stream,unavailable",
    "retriable-status-codes,503,504", "cancelled,deadline-exceeded,resource-exhausted",
    ",".join(ENVOY_RETRY_ON + ENVOY_RETRY_GRPC_ON)])
def test_envoy_retry_conditions_and_status_codes_are_accepted(retry_on: str) -> None:
    assert unknown_retry_conditions(retry_on) == []
    policy = _policy(retries={"retryOn": retry_on})
    assert traffic_settings(policy).retries["retryOn"] == retry_on


@pytest.mark.parametrize(("retry_on", "unknown"), [
    ("sometimes", ["sometimes"]), ("5xx,sometimes", ["sometimes"]), ("5XX", ["5XX"]),
    ("503,600,42", ["600", "42"]), ("5xx,", [""]), ("connect failure", ["connect failure"])])
def test_anything_else_is_refused_naming_the_unknown_entries(retry_on: str,
                                                            unknown: list[str]) -> None:
    assert unknown_retry_conditions(retry_on) == unknown
    with pytest.raises(InvalidSpec) as refused:
        _policy(retries={"retryOn": retry_on})
    assert f"retryOn {retry_on} has a condition Envoy does not know " \
           f"({unknown[0]})" in str(refused.value)


def test_the_defaults_without_a_policy_pass_the_same_check() -> None:
    assert unknown_retry_conditions(DEFAULT_RETRIES["retryOn"]) == []


@pytest.mark.parametrize("field", [
    {"timeout": "0s"}, {"retries": {"perTryTimeout": "0ms", "attempts": 1}},
    {"connectionPool": {"connectTimeout": "0.5ms"}}, {"outlierDetection": {"interval": "0s"}}])
def test_istio_durations_under_a_millisecond_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(InvalidSpec, match="is shorter than 1ms, the least Istio accepts"):
        _policy(**field)


def test_the_crd_carries_the_rules_with_messages_naming_the_value() -> None:
    schema = crdgen.crd_manifest(crdgen.CIRCUITBREAKER)["spec"]["versions"][0]["schema"]
    spec = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]
    retry_on = spec["retries"]["properties"]["retryOn"]
    assert "pattern" not in retry_on  # one error per bad value, from the rule below
    (rule,) = retry_on["x-kubernetes-validations"]
    assert rule == RETRY_ON_RULE
    assert rule["messageExpression"].startswith("'retryOn ' + self")
    for duration in (spec["timeout"], spec["retries"]["properties"]["perTryTimeout"],
                     spec["connectionPool"]["properties"]["connectTimeout"],
                     spec["outlierDetection"]["properties"]["interval"],
                     spec["outlierDetection"]["properties"]["baseEjectionTime"]):
        (minimum,) = duration["x-kubernetes-validations"]
        assert "duration('1ms')" in minimum["rule"] and "messageExpression" in minimum
