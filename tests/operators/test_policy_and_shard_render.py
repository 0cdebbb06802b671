"""Client circuit-breaker settings and the shard map: what callers and the product service
read, rendered deterministically."""

from __future__ import annotations

import json

from operators.circuitbreaker.render import (
    BREAKERS_CONFIGMAP,
    PolicyRef,
    policy_conflicts,
    policy_for_target,
    render_client_breakers,
)
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.shardlayout.render import render_shard_map, shard_map
from operators.shardlayout.spec import ShardLayoutSpec


def _policy(name: str, target: str, **spec: object) -> PolicyRef:
    return PolicyRef(name, f"uid-{name}", CircuitBreakerPolicySpec.model_validate(
        {"targetRef": {"name": target}, **spec}))


def test_client_breaker_settings_are_plain_seconds_per_target() -> None:
    config_map = render_client_breakers("shop", [_policy("pay", "payment-service")])
    assert config_map["metadata"]["name"] == BREAKERS_CONFIGMAP
    settings = json.loads(config_map["data"]["payment-service.json"])
    assert settings == {
        "policy": "pay", "target": "payment-service",
        "host": "payment-service.shop.svc.cluster.local", "timeoutSeconds": 3.0,
        "errorThresholdPercentage": 50, "resetTimeoutSeconds": 30.0,
        "rollingWindowSeconds": 10.0, "rollingBuckets": 10, "volumeThreshold": 5}


def test_deleting_a_policy_drops_only_its_own_settings() -> None:
    both = [_policy("pay", "payment-service"), _policy("ship", "shipping-service")]
    assert set(render_client_breakers("shop", both)["data"]) == {
        "payment-service.json", "shipping-service.json"}
    assert set(render_client_breakers("shop", both[1:])["data"]) == {"shipping-service.json"}


def test_two_policies_for_one_target_apply_the_first_by_name_and_report_the_other() -> None:
    policies = [_policy("zeta", "payment-service", timeout="9s"),
                _policy("alpha", "payment-service", timeout="4s")]
    chosen = policy_for_target(policies, "payment-service")
    assert chosen is not None and chosen.timeout == "4s"
    (conflict,) = policy_conflicts(policies)
    assert conflict.policies == ("alpha", "zeta")
    assert "delete or retarget zeta" in conflict.message
    assert policy_for_target(policies, "order-service") is None


LAYOUT = ShardLayoutSpec.model_validate({
    "defaultShard": "shard-1",
    "shards": [{"name": "shard-2", "database": {"name": "s2"}, "categories": ["shoes", "clothing"]},
               {"name": "shard-1", "database": {"name": "s1"}, "categories": ["electronics"]}]})


def test_shard_map_spells_out_every_category_and_the_rule_for_the_rest() -> None:
    document = shard_map("catalog", LAYOUT)
    assert document["categories"] == {"clothing": "shard-2", "electronics": "shard-1",
                                      "shoes": "shard-2"}
    assert [s["name"] for s in document["shards"]] == ["shard-1", "shard-2"]
    assert document["unlistedCategories"] == "DefaultShard"
    assert document["defaultShard"] == "shard-1"


def test_shard_map_version_ignores_declaration_order_but_not_content() -> None:
    reordered = ShardLayoutSpec.model_validate({
        "defaultShard": "shard-1",
        "shards": [{"name": "shard-1", "database": {"name": "s1"}, "categories": ["electronics"]},
                   {"name": "shard-2", "database": {"name": "s2"},
                    "categories": ["clothing", "shoes"]}]})
    assert shard_map("catalog", reordered)["version"] == shard_map("catalog", LAYOUT)["version"]
    moved = ShardLayoutSpec.model_validate({
        "defaultShard": "shard-1",
        "shards": [{"name": "shard-1", "database": {"name": "s1"},
                    "categories": ["electronics", "shoes"]},
                   {"name": "shard-2", "database": {"name": "s2"}, "categories": ["clothing"]}]})
    assert shard_map("catalog", moved)["version"] != shard_map("catalog", LAYOUT)["version"]


def test_shard_map_config_map_is_owned_by_the_layout_and_annotated_with_its_version() -> None:
    config_map = render_shard_map("catalog", "shop", LAYOUT, "uid-1")
    document = json.loads(config_map["data"]["shard-map.json"])
    assert config_map["metadata"]["name"] == "catalog-shard-map"
    assert config_map["metadata"]["annotations"]["kommerce.io/shard-map-version"] \
        == document["version"]
    assert config_map["metadata"]["ownerReferences"][0]["controller"] is True
