"""Invalid specs are refused with a message that names the field and says what to do;
the Python mirror of each CEL rule refuses the same input with the same words."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from operators.bluegreen.spec import BlueGreenRolloutSpec, Color
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.spec import CommerceServiceSpec
from operators.meta import check_resource_name
from operators.schema import CelRule, InvalidSpec, parse_spec
from operators.shardlayout.spec import ShardLayoutSpec, rendezvous_shard
from operators.units import parse_duration, parse_quantity

SERVICE = {"component": "product", "image": "kommerce:1"}
SHARDS = {
    "defaultShard": "shard-1",
    "shards": [
        {"name": "shard-1", "database": {"name": "s1"}, "categories": ["electronics"]},
        {"name": "shard-2", "database": {"name": "s2"}, "categories": ["clothing"]},
    ],
}
ROLLOUT = {"serviceRef": {"name": "product-service"}, "blue": {"image": "kommerce:1"}}
POLICY = {"targetRef": {"name": "payment-service"}}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


INVALID: list[tuple[str, type[BaseModel], dict[str, Any], str, str]] = [
    ("unknown component", CommerceServiceSpec, _with(SERVICE, component="cart"),
     "spec.component", "Input should be 'user', 'product'"),
    ("min above max", CommerceServiceSpec,
     _with(SERVICE, autoscaling={"minReplicas": 5, "maxReplicas": 3}), "spec.autoscaling",
     "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"),
    ("duplicate route prefix", CommerceServiceSpec,
     _with(SERVICE, routes=[{"pathPrefix": "/api/products"},
                            {"pathPrefix": "/api/products", "methods": ["GET"]}]),
     "spec", "routes must have distinct pathPrefix values"),
    ("request above limit", CommerceServiceSpec,
     _with(SERVICE, resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}),
     "spec.resources", "resources.requests.cpu must not exceed resources.limits.cpu"),
    ("memory request above limit", CommerceServiceSpec,
     _with(SERVICE, resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}),
     "spec.resources", "resources.requests.memory must not exceed resources.limits.memory"),
    ("bad quantity", CommerceServiceSpec,
     _with(SERVICE, resources={"requests": {"cpu": "lots"}}), "spec.resources.requests.cpu",
     "is not a Kubernetes quantity"),
    ("database from a ConfigMap", CommerceServiceSpec,
     _with(SERVICE, connections={"database": {"configMapKeyRef": {"name": "db"}}}),
     "spec.connections", "connections.database must come from a Secret"),
    ("stripe key from a ConfigMap", CommerceServiceSpec,
     _with(SERVICE, connections={"stripe": {"configMapKeyRef": {"name": "stripe"}}}),
     "spec.connections", "connections.stripe must come from a Secret"),
    ("both secret and configmap", CommerceServiceSpec,
     _with(SERVICE, connections={"redis": {"secretKeyRef": {"name": "a"},
                                           "configMapKeyRef": {"name": "b"}}}),
     "spec.connections.redis", "set exactly one of secretKeyRef or configMapKeyRef"),
    ("env sets a connection variable", CommerceServiceSpec,
     _with(SERVICE, env=[{"name": "DATABASE_URL", "value": "x"}]), "spec",
     "declare backing services under spec.connections"),
    ("env sets an operator variable", CommerceServiceSpec,
     _with(SERVICE, env=[{"name": "KOMMERCE_PORT", "value": "1"}]), "spec",
     "the operator sets these itself"),
    ("envFrom with both kinds", CommerceServiceSpec,
     _with(SERVICE, envFrom=[{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]),
     "spec.envFrom[0]", "set exactly one of secretRef or configMapRef"),
    ("duplicate env", CommerceServiceSpec,
     _with(SERVICE, env=[{"name": "A"}, {"name": "A"}]), "spec",
     "env must not name the same variable twice"),
    ("gateway with routes", CommerceServiceSpec,
     _with(SERVICE, component="gateway", routes=[{"pathPrefix": "/api"}]), "spec",
     "a gateway has no routes of its own"),
    ("shard layout on an order service", CommerceServiceSpec,
     _with(SERVICE, component="order", shardLayout="catalog"), "spec",
     "only the product component routes by a shard layout"),
    ("route without leading slash", CommerceServiceSpec,
     _with(SERVICE, routes=[{"pathPrefix": "api/products"}]), "spec.routes[0].pathPrefix",
     "String should match pattern"),
    ("unknown field", CommerceServiceSpec, _with(SERVICE, replica=3), "spec.replica",
     "Extra inputs are not permitted"),
    ("category in two shards", ShardLayoutSpec,
     _with(SHARDS, shards=[*SHARDS["shards"],
                           {"name": "shard-3", "database": {"name": "s3"},
                            "categories": ["electronics"]}]),
     "spec", "a category may belong to only one shard"),
    ("missing default shard", ShardLayoutSpec, _with(SHARDS, defaultShard="shard-9"), "spec",
     "defaultShard must name one of spec.shards"),
    ("duplicate shard names", ShardLayoutSpec,
     _with(SHARDS, shards=[SHARDS["shards"][0], SHARDS["shards"][0]]), "spec",
     "shard names must be unique"),
    ("no shards", ShardLayoutSpec, _with(SHARDS, shards=[]), "spec.shards",
     "List should have at least 1 item"),
    ("active colour without image", BlueGreenRolloutSpec, _with(ROLLOUT, activeColor="green"),
     "spec", "the active colour needs an image"),
    ("preview larger than active", BlueGreenRolloutSpec,
     _with(ROLLOUT, replicas=2, previewReplicas=3), "spec",
     "previewReplicas must not exceed replicas"),
    ("bad colour", BlueGreenRolloutSpec, _with(ROLLOUT, activeColor="red"),
     "spec.activeColor", "Input should be 'blue' or 'green'"),
    ("per-try timeout above timeout", CircuitBreakerPolicySpec,
     _with(POLICY, timeout="1s", retries={"perTryTimeout": "2s"}), "spec",
     "retries.perTryTimeout must not be longer than timeout"),
    ("window not divisible by buckets", CircuitBreakerPolicySpec,
     _with(POLICY, client={"rollingWindow": "10s", "rollingBuckets": 3}), "spec.client",
     "client.rollingWindow must divide evenly into client.rollingBuckets"),
    ("bad duration", CircuitBreakerPolicySpec, _with(POLICY, timeout="ten seconds"),
     "spec.timeout", "String should match pattern"),
    # Values that reach Istio: refused before anything is written, naming the value.
    ("retryOn Envoy does not know", CircuitBreakerPolicySpec,
     _with(POLICY, retries={"retryOn": "sometimes"}), "spec.retries.retryOn",
     "retryOn sometimes has a condition Envoy does not know (sometimes)"),
    ("retryOn with one bad entry", CircuitBreakerPolicySpec,
     _with(POLICY, retries={"retryOn": "5xx,retriable-status-codes,600"}),
     "spec.retries.retryOn", "a condition Envoy does not know (600)"),
    ("timeout under a millisecond", CircuitBreakerPolicySpec, _with(POLICY, timeout="0s"),
     "spec.timeout", "duration 0s is shorter than 1ms, the least Istio accepts"),
    ("ejection time under a millisecond", CircuitBreakerPolicySpec,
     _with(POLICY, outlierDetection={"baseEjectionTime": "0ms"}),
     "spec.outlierDetection.baseEjectionTime", "duration 0ms is shorter than 1ms"),
    # Messages that name the offending value.
    ("duplicate route prefix named", CommerceServiceSpec,
     _with(SERVICE, routes=[{"pathPrefix": "/api/a"}, {"pathPrefix": "/api/products"},
                            {"pathPrefix": "/api/products", "methods": ["GET"]}]),
     "spec", "declared more than once: /api/products"),
    ("duplicate env named", CommerceServiceSpec,
     _with(SERVICE, env=[{"name": "A"}, {"name": "B"}, {"name": "A"}]), "spec",
     "repeated: A"),
    ("category in two shards named", ShardLayoutSpec,
     _with(SHARDS, shards=[*SHARDS["shards"],
                           {"name": "shard-3", "database": {"name": "s3"},
                            "categories": ["toys", "electronics"]}]),
     "spec", "remove it from all shards but one; electronics is in more than one shard"),
    ("duplicate shard name named", ShardLayoutSpec,
     _with(SHARDS, shards=[SHARDS["shards"][0], SHARDS["shards"][1],
                           {**SHARDS["shards"][1], "categories": ["toys"]}]),
     "spec", "shard names must be unique; repeated: shard-2"),
    ("preview larger than active named", BlueGreenRolloutSpec,
     _with(ROLLOUT, replicas=2, previewReplicas=3), "spec",
     "previewReplicas must not exceed replicas: 3 > 2"),
    ("request above limit named", CommerceServiceSpec,
     _with(SERVICE, resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}),
     "spec.resources", "resources.requests.cpu must not exceed resources.limits.cpu: 2 > 1500m"),
]


@pytest.mark.parametrize(("model", "spec", "path", "message"),
                         [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_spec_is_refused_with_the_field_and_an_actionable_message(
        model: type[BaseModel], spec: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        parse_spec(model, spec)
    lines = str(refused.value).splitlines()
    assert any(line.startswith(f"{path}: ") and message in line for line in lines), lines


def _rules(model: type[BaseModel]) -> list[CelRule]:
    found = list(getattr(model, "cel_rules", ()))
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found.extend(_rules(candidate))
    return found


@pytest.mark.parametrize("model", [CommerceServiceSpec, ShardLayoutSpec, BlueGreenRolloutSpec,
                                   CircuitBreakerPolicySpec])
def test_every_cel_rule_has_a_python_mirror_and_a_message(model: type[BaseModel]) -> None:
    rules = _rules(model)
    assert rules
    for rule in rules:
        assert rule.message and rule.rule and callable(rule.check)


def test_every_cel_message_is_pinned_by_an_invalid_case() -> None:
    pinned = [case[4] for case in INVALID]
    rules = [rule for model in (CommerceServiceSpec, ShardLayoutSpec, BlueGreenRolloutSpec,
                                CircuitBreakerPolicySpec) for rule in _rules(model)
             if "oldSelf" not in rule.rule]  # transition rules need the stored object
    missing = [rule.message for rule in rules
               if not any(fragment in rule.message for fragment in pinned)]
    assert not missing, f"no invalid-spec case for: {missing}"


def test_valid_minimal_specs_parse() -> None:
    assert parse_spec(CommerceServiceSpec, SERVICE).autoscaling.max_replicas == 10
    assert parse_spec(ShardLayoutSpec, SHARDS).shard_for("clothing") == "shard-2"
    assert parse_spec(BlueGreenRolloutSpec, ROLLOUT).active_color is Color.BLUE
    assert parse_spec(CircuitBreakerPolicySpec, POLICY).client.timeout == "3s"


def test_integer_quantities_are_accepted_like_kubectl_does() -> None:
    spec = parse_spec(CommerceServiceSpec, _with(
        SERVICE, resources={"requests": {"cpu": 1}, "limits": {"cpu": 2}}))
    assert spec.resources.requests.cpu == "1"


def test_referenced_secrets_and_config_maps_say_whether_all_uses_are_optional() -> None:
    spec = parse_spec(CommerceServiceSpec, _with(
        SERVICE,
        connections={"database": {"secretKeyRef": {"name": "db"}},
                     "redis": {"configMapKeyRef": {"name": "redis", "optional": True}},
                     "stripe": {"secretKeyRef": {"name": "extra", "optional": True}}},
        envFrom=[{"secretRef": {"name": "db", "optional": True}},
                 {"configMapRef": {"name": "flags"}}]))
    assert spec.referenced_secrets() == {"db": False, "extra": True}
    assert spec.referenced_config_maps() == {"flags": False, "redis": True}


def test_client_breaker_defaults_are_the_reference_settings() -> None:
    client = parse_spec(CircuitBreakerPolicySpec, POLICY).client
    assert (client.timeout, client.error_threshold_percentage, client.reset_timeout,
            client.rolling_window, client.rolling_buckets) == ("3s", 50, "30s", "10s", 10)


def test_unlisted_categories_go_to_the_default_shard_unless_hashed() -> None:
    layout = parse_spec(ShardLayoutSpec, SHARDS)
    assert layout.shard_for("garden") == "shard-1"
    hashed = parse_spec(ShardLayoutSpec, _with(SHARDS, unlistedCategories="Hash"))
    assert hashed.shard_for("electronics") == "shard-1"
    assert hashed.shard_for("garden") == rendezvous_shard("garden", ["shard-1", "shard-2"])


def test_rendezvous_hashing_moves_only_categories_that_land_on_a_new_shard() -> None:
    categories = [f"category-{index}" for index in range(200)]
    before = {c: rendezvous_shard(c, ["a", "b", "c"]) for c in categories}
    after = {c: rendezvous_shard(c, ["a", "b", "c", "d"]) for c in categories}
    moved = [c for c in categories if before[c] != after[c]]
    assert moved and all(after[c] == "d" for c in moved)
    assert rendezvous_shard("x", ["b", "a"]) == rendezvous_shard("x", ["a", "b"])


@pytest.mark.parametrize("name", ["product-service", "a", "a" * 50])
def test_resource_names_that_can_name_children_are_accepted(name: str) -> None:
    assert check_resource_name(name) == name


@pytest.mark.parametrize("name", ["a" * 51, "1product", "Product", "product-", "prod_uct"])
def test_resource_names_that_cannot_name_children_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="at most 50 characters"):
        check_resource_name(name)


@pytest.mark.parametrize(("text", "seconds"), [("3s", "3"), ("250ms", "0.25"),
                                               ("1m30s", "90"), ("1.5h", "5400")])
def test_durations_parse_like_go(text: str, seconds: str) -> None:
    assert parse_duration(text) == Decimal(seconds)


@pytest.mark.parametrize(("text", "value"), [("250m", 0.25), ("1", 1), ("512Mi", 512 * 2**20),
                                             ("1Gi", 2**30), ("1.5G", 1.5e9), ("1e3", 1000)])
def test_quantities_parse_like_kubernetes(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == value
