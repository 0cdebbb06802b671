"""What a BlueGreenRollout renders, and what its CommerceService keeps while released."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kommerce.contracts.release import Release
from operators.bluegreen.handover import (
    HANDED_OVER_KINDS,
    RELEASED_CONDITION,
    hand_over,
    released_by,
    status_deployment_name,
    with_release_condition,
)
from operators.bluegreen.render import (
    COLOR_LABEL,
    ROLLOUT_LABEL,
    ColorPlan,
    RolloutRender,
    render,
)
from operators.bluegreen.spec import Color
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.render import render as render_service
from operators.commerceservice.spec import CommerceServiceSpec

SERVICE_UID = "5b0e1f52-0000-4000-8000-000000000001"
ROLLOUT_UID = "5b0e1f52-0000-4000-8000-000000000002"
SERVICE = CommerceServiceSpec.model_validate({
    "component": "product", "image": "kommerce:0.1.0",
    "routes": [{"pathPrefix": "/api/products"}, {"pathPrefix": "/api/categories"}]})
BLUE, GREEN = Color.BLUE, Color.GREEN


def _render(traffic: Color | None = BLUE, **options: Any) -> RolloutRender:
    """The rollout's render over the CommerceService's own (``options``: its keywords)."""
    plan = ColorPlan(images={BLUE: "kommerce:0.1.0", GREEN: "kommerce:0.2.0"},
                     replicas={BLUE: 3, GREEN: 0}, preview=GREEN, traffic=traffic)
    base = render_service("product-service", "shop", SERVICE, SERVICE_UID, **options)
    return render("product-service", ROLLOUT_UID, base, plan)


def _kind(rendered: RolloutRender, kind: str) -> dict[str, Any]:
    return next(m for m in rendered.traffic if m["kind"] == kind)


def test_each_colour_is_the_services_pod_template_with_its_own_image_label_and_size() -> None:
    blue, green = _render().deployments
    assert (blue["metadata"]["name"], green["metadata"]["name"]) == (
        "product-service-blue", "product-service-green")
    assert (blue["spec"]["replicas"], green["spec"]["replicas"]) == (3, 0)
    for deployment, color, image, version in ((blue, "blue", "kommerce:0.1.0", "0.1.0"),
                                              (green, "green", "kommerce:0.2.0", "0.2.0")):
        template = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"][COLOR_LABEL] == color
        assert template["metadata"]["labels"][COLOR_LABEL] == color
        assert template["metadata"]["labels"]["app.kubernetes.io/version"] == version
        assert template["spec"]["containers"][0]["image"] == image
        assert template["spec"]["topologySpreadConstraints"][0]["labelSelector"][
            "matchLabels"][COLOR_LABEL] == color
        assert deployment["metadata"]["labels"][ROLLOUT_LABEL] == "product-service"
    own = next(m for m in render_service("product-service", "shop", SERVICE, SERVICE_UID)
               if m["kind"] == "Deployment")
    assert blue["spec"]["template"]["spec"]["containers"][0]["env"] == \
        own["spec"]["template"]["spec"]["containers"][0]["env"]
    assert blue["spec"]["strategy"] == own["spec"]["strategy"]


def test_colours_and_preview_service_are_owned_by_the_rollout() -> None:
    rendered = _render()
    for manifest in [*rendered.deployments, rendered.preview_service]:
        assert manifest is not None
        (owner,) = manifest["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "BlueGreenRollout", "product-service", ROLLOUT_UID, True)


def test_preview_service_selects_the_idle_colour() -> None:
    preview = _render().preview_service
    assert preview is not None
    assert preview["metadata"]["name"] == "product-service-preview"
    assert preview["spec"]["selector"][COLOR_LABEL] == "green"


def test_traffic_objects_stay_owned_by_the_commerce_service_and_point_at_the_active_colour(
        ) -> None:
    rendered = _render(GREEN)
    assert [m["kind"] for m in rendered.traffic] == ["DestinationRule", "VirtualService",
                                                     "Service"]
    for manifest in rendered.traffic:
        (owner,) = manifest["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("CommerceService", SERVICE_UID)
        assert manifest["metadata"]["labels"][ROLLOUT_LABEL] == "product-service"
    assert _kind(rendered, "Service")["spec"]["selector"][COLOR_LABEL] == "green"
    for route in _kind(rendered, "VirtualService")["spec"]["http"]:
        assert [(r["destination"]["subset"], r["weight"]) for r in route["route"]] == [
            ("blue", 0), ("green", 100)]
    subsets = _kind(rendered, "DestinationRule")["spec"]["subsets"]
    assert subsets == [{"name": "blue", "labels": {COLOR_LABEL: "blue"}},
                       {"name": "green", "labels": {COLOR_LABEL: "green"}}]


def test_before_taking_traffic_over_only_colours_and_preview_are_rendered() -> None:
    assert _render(None).traffic == []


def test_a_circuit_breaker_policy_applies_to_both_subsets() -> None:
    policy = CircuitBreakerPolicySpec.model_validate({
        "targetRef": {"name": "product-service"}, "timeout": "4s",
        "outlierDetection": {"consecutive5xxErrors": 3}})
    rendered = _render(BLUE, breaker=policy)
    rule = _kind(rendered, "DestinationRule")["spec"]
    assert rule["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 3
    assert "trafficPolicy" not in rule["subsets"][0]  # inherited by both subsets
    assert all(route["timeout"] == "4s"
               for route in _kind(rendered, "VirtualService")["spec"]["http"])


def test_rendered_objects_pass_the_real_kubernetes_and_istio_schemas(api_schemas: Any) -> None:
    for manifest in _render(GREEN).manifests:
        assert api_schemas.errors(manifest) == []


# -- the CommerceService's side -----------------------------------------------------------


def test_a_released_service_keeps_its_deployment_at_zero_and_leaves_traffic_objects() -> None:
    children = render_service("product-service", "shop", SERVICE, SERVICE_UID)
    kept = hand_over(children, "product-service")
    assert {m["kind"] for m in kept} & HANDED_OVER_KINDS == set()
    deployment = next(m for m in kept if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 0
    assert released_by(deployment["metadata"]["labels"]) == "product-service"
    assert {m["kind"] for m in kept} == {m["kind"] for m in children} - HANDED_OVER_KINDS
    assert next(m for m in children if m["kind"] == "Deployment")["spec"].get("replicas") \
        is None  # the input is left alone


def test_a_released_service_reports_the_active_colour_and_a_released_condition() -> None:
    release = Release(rollout="product-service", active=GREEN)
    assert status_deployment_name("product-service", release) == "product-service-green"
    assert status_deployment_name("product-service", None) == "product-service"
    now = datetime(2025, 1, 1, tzinfo=UTC)
    conditions = with_release_condition([], release, service="product-service",
                                        observed_generation=2, now=now)
    (released,) = conditions
    assert (released["type"], released["status"]) == (RELEASED_CONDITION, "True")
    assert "product-service-green" in released["message"]
    assert with_release_condition(conditions, None, service="product-service",
                                  observed_generation=2, now=now) == []
