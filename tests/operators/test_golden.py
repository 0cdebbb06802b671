"""Golden manifests for the sample shop: what the operator would apply for manifests/samples.

A change to a renderer shows up here as a reviewable YAML diff; rerun with
``KOMMERCE_UPDATE_GOLDEN=1`` when the change is intended. The same manifests are then checked
against the real Kubernetes and Istio schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from operators.circuitbreaker.render import PolicyRef, policy_for_target, render_client_breakers
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.render import RoutedService, render, render_route_table
from operators.commerceservice.spec import CommerceServiceSpec
from operators.shardlayout.render import render_shard_map
from operators.shardlayout.spec import ShardLayoutSpec

from .conftest import samples_of_kind

NAMESPACE = "kommerce-shop"
Golden = Callable[[str, list[dict[str, Any]]], None]


def _uid(name: str) -> str:
    """A fixed uid per sample, so goldens do not change between runs."""
    return f"00000000-0000-4000-8000-{sum(map(ord, name)):012d}"


def _policies(sample_documents: list[dict[str, Any]]) -> list[PolicyRef]:
    return [PolicyRef(d["metadata"]["name"], _uid(d["metadata"]["name"]),
                      CircuitBreakerPolicySpec.model_validate(d["spec"]))
            for d in samples_of_kind(sample_documents, "CircuitBreakerPolicy")]


def sample_shop_manifests(
        sample_documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Golden name -> the manifests the operator renders for the sample shop."""
    policies = _policies(sample_documents)
    layouts = {d["metadata"]["name"]: ShardLayoutSpec.model_validate(d["spec"])
               for d in samples_of_kind(sample_documents, "ShardLayout")}
    out: dict[str, list[dict[str, Any]]] = {}
    routed = []
    for sample in samples_of_kind(sample_documents, "CommerceService"):
        name = sample["metadata"]["name"]
        spec = CommerceServiceSpec.model_validate(sample["spec"])
        routed.append(RoutedService(name, _uid(name), spec))
        out[f"commerceservice-{name}"] = render(
            name, NAMESPACE, spec, _uid(name), breaker=policy_for_target(policies, name),
            shard_layout=layouts.get(spec.shard_layout or ""))
    out["gateway-route-table"] = [render_route_table(NAMESPACE, routed)]
    out["circuit-breakers"] = [render_client_breakers(NAMESPACE, policies)]
    for sample in samples_of_kind(sample_documents, "ShardLayout"):
        name = sample["metadata"]["name"]
        out[f"shardlayout-{name}"] = [render_shard_map(name, NAMESPACE, sample["spec"],
                                                       _uid(name))]
    return out


def test_sample_shop_has_a_golden_for_each_of_the_eight_components(
        sample_documents: list[dict[str, Any]]) -> None:
    names = [n for n in sample_shop_manifests(sample_documents) if n.startswith("commerce")]
    assert len(names) == 8


def test_sample_shop_renders_exactly_the_goldens(sample_documents: list[dict[str, Any]],
                                                 golden: Golden) -> None:
    for name, manifests in sample_shop_manifests(sample_documents).items():
        golden(name, manifests)


@pytest.mark.parametrize("section", ["commerceservice", "gateway", "circuit", "shardlayout"])
def test_sample_shop_manifests_pass_the_real_kubernetes_and_istio_schemas(
        sample_documents: list[dict[str, Any]], api_schemas: Any, section: str) -> None:
    for name, manifests in sample_shop_manifests(sample_documents).items():
        if name.startswith(section):
            for manifest in manifests:
                assert api_schemas.errors(manifest) == []
