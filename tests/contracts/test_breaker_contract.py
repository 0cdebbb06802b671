"""Client circuit-breaker settings: the file the CircuitBreakerPolicy operator writes per
target is what every service's HTTP client runs its breaker with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kommerce.contracts.breaker import (
    BREAKERS_CONFIGMAP,
    BreakerPolicy,
    ClientBreakerSettings,
    breaker_file_name,
    parse_breaker_config,
)
from operators.circuitbreaker.render import PolicyRef, client_settings, render_client_breakers
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from services.core.http import load_breaker_config

PROPERTIES = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def clients(draw: st.DrawFn) -> dict[str, Any]:
    buckets = draw(st.sampled_from([1, 2, 4, 5, 10, 20]))
    return {"timeout": f"{draw(st.integers(1, 3000))}ms",
            "errorThresholdPercentage": draw(st.integers(1, 100)),
            "resetTimeout": f"{draw(st.integers(1, 600))}s",
            "rollingWindow": f"{draw(st.integers(1, 60)) * 1000 * buckets // buckets}ms",
            "rollingBuckets": buckets,
            "volumeThreshold": draw(st.integers(0, 100_000))}


def policy(name: str, target: str, client: dict[str, Any] | None = None) -> PolicyRef:
    spec = CircuitBreakerPolicySpec.model_validate(
        {"targetRef": {"name": target}, **({"client": client} if client else {})})
    return PolicyRef(name, f"uid-{name}", spec)


@PROPERTIES
@given(clients())
def test_every_service_loads_the_settings_the_operator_renders(
        tmp_path_factory: pytest.TempPathFactory, client: dict[str, Any]) -> None:
    written = client_settings(policy("payment-breaker", "payment", client), "shop")
    config_map = render_client_breakers("shop", [policy("payment-breaker", "payment", client)])
    folder = tmp_path_factory.mktemp("breakers")
    for key, text in config_map["data"].items():
        (folder / key).write_text(text)

    loaded = load_breaker_config(folder).policy_for("payment")

    assert config_map["metadata"]["name"] == BREAKERS_CONFIGMAP
    assert list(config_map["data"]) == [breaker_file_name("payment")]
    assert loaded == written.breaker_policy()
    assert (loaded.timeout_seconds, loaded.error_threshold_percentage,
            loaded.reset_timeout_seconds, loaded.rolling_window_seconds,
            loaded.rolling_window_buckets, loaded.volume_threshold) == (
        written.timeout_seconds, written.error_threshold_percentage,
        written.reset_timeout_seconds, written.rolling_window_seconds,
        written.rolling_buckets, written.volume_threshold)


def test_the_settings_round_trip_through_their_json() -> None:
    written = client_settings(policy("p", "user"), "shop")
    assert ClientBreakerSettings.model_validate_json(written.to_json()) == written
    assert json.loads(written.to_json())["rollingBuckets"] == 10


def test_a_target_without_a_file_runs_with_the_reference_defaults(tmp_path: Path) -> None:
    (tmp_path / breaker_file_name("payment")).write_text(
        client_settings(policy("p", "payment"), "shop").to_json())
    assert load_breaker_config(tmp_path).policy_for("user") == BreakerPolicy()


@pytest.mark.parametrize(("document", "problem"), [
    ({"target": "payment", "timeoutSeconds": 0}, "timeout_seconds\n  Input should be greater "
                                                  "than 0"),
    ({"target": "payment", "errorThresholdPercentage": 150}, "less than or equal to 100"),
    ({"target": "payment", "rollingWindowSeconds": 0.001, "rollingBuckets": 10},
     "rolling window buckets must be at least 1 ms wide"),
    ({"default": {"volumeThreshold": -1}}, "greater than or equal to 0"),
])
def test_settings_a_breaker_cannot_run_with_are_refused(document: dict[str, Any],
                                                        problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_breaker_config(document)
    assert problem in str(refused.value)


def test_the_operator_file_has_exactly_its_fields() -> None:
    fields = json.loads(client_settings(policy("p", "user"), "shop").to_json())
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ClientBreakerSettings.model_validate({**fields, "timeout": "3s"})
    with pytest.raises(ValidationError, match="Field required"):
        ClientBreakerSettings.model_validate({k: v for k, v in fields.items() if k != "host"})
