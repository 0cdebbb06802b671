"""What a CommerceService renders into, behaviour by behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.render import (
    CHILD_KINDS,
    ROUTE_TABLE_CONFIGMAP,
    RoutedService,
    image_version,
    render,
    render_route_table,
    route_conflicts,
)
from operators.commerceservice.spec import OPERATOR_ENV, CommerceServiceSpec
from operators.schema import InvalidSpec
from operators.shardlayout.render import shard_map
from operators.shardlayout.spec import ShardLayoutSpec
from services.core.shardmap import parse_shard_map

UID = "5b0e1f52-0000-4000-8000-000000000001"
SPEC: dict[str, Any] = {
    "component": "product",
    "image": "kommerce:1.2.0",
    "connections": {"database": {"secretKeyRef": {"name": "product-db"}},
                    "redis": {"configMapKeyRef": {"name": "redis-config"}}},
    "env": [{"name": "LOG_LEVEL", "value": "debug"}],
    "routes": [{"pathPrefix": "/api/products", "rateLimitPerMinute": 100},
               {"pathPrefix": "/api/products/search", "methods": ["GET"],
                "authRequired": False}],
}


def _children(spec: dict[str, Any] | None = None, **options: Any) -> dict[str, dict[str, Any]]:
    return {child["kind"]: child
            for child in render("product-service", "shop", spec or SPEC, UID, **options)}


def _container(children: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return children["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_renders_every_child_kind_in_apply_order() -> None:
    kinds = [child["kind"] for child in render("product-service", "shop", SPEC, UID)]
    assert kinds == ["ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "VirtualService", "DestinationRule"]
    assert {(c["apiVersion"], c["kind"]) for c in render("product-service", "shop", SPEC, UID)} \
        == set(CHILD_KINDS)


def test_every_child_is_owned_by_the_commerce_service_as_controller() -> None:
    for child in render("product-service", "shop", SPEC, UID):
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "name": "product-service", "uid": UID, "controller": True,
            "blockOwnerDeletion": True}]
        assert child["metadata"]["namespace"] == "shop"


def test_every_child_carries_the_app_kubernetes_io_labels() -> None:
    for child in render("product-service", "shop", SPEC, UID):
        assert child["metadata"]["labels"] == {
            "app.kubernetes.io/component": "product",
            "app.kubernetes.io/instance": "product-service",
            "app.kubernetes.io/managed-by": "kommerce-operator",
            "app.kubernetes.io/name": "product",
            "app.kubernetes.io/part-of": "kommerce",
            "app.kubernetes.io/version": "1.2.0",
        }


def test_deployment_rolls_out_one_extra_pod_at_a_time_and_never_drops_below_wanted() -> None:
    strategy = _children()["Deployment"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_probes_hit_health_and_ready_on_the_named_port() -> None:
    container = _container(_children())
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http",
                                                     "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["initialDelaySeconds"] == 30
    assert container["readinessProbe"]["periodSeconds"] == 5


def test_resources_default_to_the_reference_sizing() -> None:
    assert _container(_children())["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"}}


def test_connections_become_env_from_secret_and_config_map_keys() -> None:
    env = {item["name"]: item for item in _container(_children())["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "product-db", "key": "url", "optional": False}}
    assert env["REDIS_URL"]["valueFrom"] == {
        "configMapKeyRef": {"name": "redis-config", "key": "url", "optional": False}}
    assert env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert env["KOMMERCE_COMPONENT"]["value"] == "product"


def test_env_from_imports_whole_secrets_and_config_maps() -> None:
    spec = {**SPEC, "envFrom": [{"secretRef": {"name": "extra"}, "prefix": "EXTRA_"},
                                {"configMapRef": {"name": "flags", "optional": True}}]}
    assert _container(_children(spec))["envFrom"] == [
        {"secretRef": {"name": "extra", "optional": False}, "prefix": "EXTRA_"},
        {"configMapRef": {"name": "flags", "optional": True}}]


def test_with_autoscaling_the_deployment_leaves_replicas_to_the_hpa() -> None:
    children = _children()
    assert "replicas" not in children["Deployment"]["spec"]
    hpa = children["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "product-service"}


def test_without_autoscaling_the_deployment_sets_replicas_and_no_hpa_is_rendered() -> None:
    children = _children({**SPEC, "replicas": 2, "autoscaling": {"enabled": False}})
    assert children["Deployment"]["spec"]["replicas"] == 2
    assert "HorizontalPodAutoscaler" not in children


def test_hpa_targets_cpu_and_memory_utilisation_when_both_are_set() -> None:
    spec = {**SPEC, "autoscaling": {"targetCPUUtilizationPercentage": 70,
                                    "targetMemoryUtilizationPercentage": 80,
                                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}
    hpa = _children(spec)["HorizontalPodAutoscaler"]["spec"]
    assert [(m["resource"]["name"], m["resource"]["target"]) for m in hpa["metrics"]] == [
        ("cpu", {"type": "Utilization", "averageUtilization": 70}),
        ("memory", {"type": "Utilization", "averageUtilization": 80})]
    assert hpa["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


def test_hpa_omits_memory_and_behaviour_unless_asked() -> None:
    hpa = _children()["HorizontalPodAutoscaler"]["spec"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "behavior" not in hpa


def test_pod_disruption_budget_selects_the_pods_and_can_be_turned_off() -> None:
    children = _children()
    pdb = children["PodDisruptionBudget"]["spec"]
    assert pdb["selector"] == children["Deployment"]["spec"]["selector"]
    assert pdb["maxUnavailable"] == 1
    assert "PodDisruptionBudget" not in _children({**SPEC, "disruptionBudget": {"enabled": False}})


def test_service_selects_exactly_the_deployments_pods() -> None:
    children = _children()
    selector = children["Service"]["spec"]["selector"]
    assert selector == children["Deployment"]["spec"]["selector"]["matchLabels"]
    pod_labels = children["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert children["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_virtual_service_routes_longest_prefix_first_then_a_catch_all() -> None:
    http = _children()["VirtualService"]["spec"]["http"]
    assert [route.get("match") for route in http] == [
        [{"uri": {"prefix": "/api/products/search"}}], [{"uri": {"prefix": "/api/products"}}],
        None]
    assert [route["name"] for route in http] == [
        "api-products-search", "api-products", "default"]
    for route in http:
        assert route["route"] == [{"destination": {
            "host": "product-service.shop.svc.cluster.local", "port": {"number": 80}}}]


def test_without_a_policy_routes_retry_only_calls_that_never_reached_the_service() -> None:
    route = _children()["VirtualService"]["spec"]["http"][0]
    assert route["retries"]["retryOn"] == "connect-failure,refused-stream,unavailable"
    assert route["timeout"] == "15s"
    assert "connectionPool" not in _children()["DestinationRule"]["spec"]["trafficPolicy"]


def test_a_circuit_breaker_policy_is_merged_into_destination_rule_and_routes() -> None:
    policy = CircuitBreakerPolicySpec.model_validate({
        "targetRef": {"name": "product-service"}, "timeout": "4s",
        "connectionPool": {"maxConnections": 10, "maxRequestsPerConnection": 5},
        "outlierDetection": {"consecutive5xxErrors": 3},
        "retries": {"attempts": 1, "perTryTimeout": "1s", "retryOn": "5xx"}})
    children = _children(breaker=policy)
    traffic = children["DestinationRule"]["spec"]["trafficPolicy"]
    assert traffic["connectionPool"] == {
        "http": {"http1MaxPendingRequests": 100, "maxRequestsPerConnection": 5},
        "tcp": {"connectTimeout": "3s", "maxConnections": 10}}
    assert traffic["outlierDetection"] == {"baseEjectionTime": "30s", "consecutive5xxErrors": 3,
                                           "interval": "10s", "maxEjectionPercent": 50}
    for route in children["VirtualService"]["spec"]["http"]:
        assert route["timeout"] == "4s"
        assert route["retries"] == {"attempts": 1, "perTryTimeout": "1s", "retryOn": "5xx"}


def test_a_policy_with_no_retries_disables_mesh_retries() -> None:
    policy = CircuitBreakerPolicySpec.model_validate({
        "targetRef": {"name": "product-service"}, "retries": {"attempts": 0}})
    route = _children(breaker=policy)["VirtualService"]["spec"]["http"][0]
    assert route["retries"] == {"attempts": 0}


def test_pods_run_hardened_without_an_api_token() -> None:
    children = _children()
    pod = children["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert children["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}


def test_every_pod_mounts_the_client_breaker_settings() -> None:
    pod = _children()["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["circuit-breakers"]["configMap"] == {"name": "kommerce-circuit-breakers",
                                                        "optional": True}


def test_the_gateway_mounts_the_route_table_and_is_told_where_it_is() -> None:
    gateway = render("gateway", "shop", {"component": "gateway", "image": "kommerce:1"}, UID)
    deployment = next(c for c in gateway if c["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "routes", "configMap": {"name": ROUTE_TABLE_CONFIGMAP, "optional": True}} \
        in pod["volumes"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KOMMERCE_ROUTE_TABLE"] == "/etc/kommerce/gateway/routes.json"


def test_render_is_deterministic() -> None:
    first = json.dumps(render("product-service", "shop", SPEC, UID))
    assert json.dumps(render("product-service", "shop", dict(SPEC), UID)) == first


def test_render_refuses_an_invalid_spec_with_the_field_named() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.autoscaling: autoscaling\.minReplicas"):
        render("product-service", "shop",
               {**SPEC, "autoscaling": {"minReplicas": 9, "maxReplicas": 3}}, UID)


def test_render_refuses_a_name_too_long_for_its_children() -> None:
    with pytest.raises(ValueError, match="at most 50 characters"):
        render("p" * 51, "shop", SPEC, UID)


@pytest.mark.parametrize(("image", "version"), [
    ("kommerce:1.2.0", "1.2.0"), ("registry.local:5000/team/kommerce:2.0", "2.0"),
    ("registry.local:5000/kommerce", ""), ("kommerce@sha256:abc", ""), ("kommerce", "")])
def test_image_version_label_comes_from_the_tag(image: str, version: str) -> None:
    assert image_version(image) == version


# --- route table ------------------------------------------------------------------------


def _routed(name: str, component: str, routes: list[dict[str, Any]]) -> RoutedService:
    spec = CommerceServiceSpec.model_validate(
        {"component": component, "image": "kommerce:1", "routes": routes})
    return RoutedService(name, f"uid-{name}", spec)


def test_route_table_lists_every_route_longest_prefix_first_with_its_upstream() -> None:
    services = [
        _routed("order-service", "order", [{"pathPrefix": "/api/orders", "methods": ["GET"],
                                            "rateLimitPerMinute": 50}]),
        _routed("product-service", "product", [
            {"pathPrefix": "/api/products", "authRequired": False, "rateLimitPerMinute": 100},
            {"pathPrefix": "/api/products/admin", "methods": ["DELETE", "POST"]}]),
        _routed("gateway", "gateway", []),
    ]
    config_map = render_route_table("shop", services)
    table = json.loads(config_map["data"]["routes.json"])
    assert [r["pathPrefix"] for r in table["routes"]] == [
        "/api/products/admin", "/api/products", "/api/orders"]
    orders = table["routes"][2]
    assert orders == {"pathPrefix": "/api/orders", "methods": ["GET"], "authRequired": True,
                      "rateLimitPerMinute": 50, "service": "order-service",
                      "component": "order",
                      "upstream": "http://order-service.shop.svc.cluster.local:80"}
    assert table["routes"][0]["methods"] == ["POST", "DELETE"]
    assert config_map["metadata"]["annotations"]["kommerce.io/route-table-version"] \
        == table["version"]
    assert [o["name"] for o in config_map["metadata"]["ownerReferences"]] == [
        "gateway", "order-service", "product-service"]
    assert all("controller" not in o for o in config_map["metadata"]["ownerReferences"])


def test_route_table_version_changes_only_when_routes_change() -> None:
    one = [_routed("a", "order", [{"pathPrefix": "/api/a"}])]
    same = render_route_table("shop", one)["metadata"]["annotations"]
    assert render_route_table("shop", list(one))["metadata"]["annotations"] == same
    other = [_routed("a", "order", [{"pathPrefix": "/api/a", "rateLimitPerMinute": 5}])]
    assert render_route_table("shop", other)["metadata"]["annotations"] != same


def test_a_prefix_claimed_twice_goes_to_the_first_service_and_is_reported() -> None:
    services = [_routed("b-service", "order", [{"pathPrefix": "/api/x"}]),
                _routed("a-service", "review", [{"pathPrefix": "/api/x"}])]
    table = json.loads(render_route_table("shop", services)["data"]["routes.json"])
    assert [r["service"] for r in table["routes"]] == ["a-service"]
    (conflict,) = route_conflicts(services)
    assert conflict.services == ("a-service", "b-service")
    assert "remove it from b-service" in conflict.message


def test_every_variable_the_operator_sets_is_reserved_from_spec_env() -> None:
    for component in ("product", "gateway"):
        spec = {"component": component, "image": "kommerce:1"}
        (deployment,) = [c for c in render("svc", "shop", spec, UID) if c["kind"] == "Deployment"]
        names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert names <= set(OPERATOR_ENV)


LAYOUT = ShardLayoutSpec.model_validate({
    "defaultShard": "shard-1",
    "shards": [{"name": "shard-1", "database": {"name": "catalog-1", "key": "url"},
                "categories": ["shoes"]},
               {"name": "shard-2", "database": {"name": "catalog-2", "key": "dsn"}}]})


def test_a_sharded_product_pod_finds_each_shards_database_where_the_shard_map_looks() -> None:
    pod = _children({**SPEC, "shardLayout": "catalog"}, shard_layout=LAYOUT)[
        "Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shard-map"]["configMap"] == {"name": "catalog-shard-map"}
    assert env["KOMMERCE_SHARD_MAP_PATH"] == f"{mounts['shard-map']}/shard-map.json"
    assert env["KOMMERCE_SECRETS_DIR"] == mounts["shard-databases"]
    mounted = {f"{mounts['shard-databases']}/{item['path']}"
               for source in volumes["shard-databases"]["projected"]["sources"]
               for item in source["secret"]["items"]}
    document = shard_map("catalog", LAYOUT)
    map_in_force = parse_shard_map(json.dumps(document))
    secrets_dir = Path(env["KOMMERCE_SECRETS_DIR"] or "")
    wanted = {str(secrets_dir / shard.database_secret.name / shard.database_secret.key)
              for shard in map_in_force.shards if shard.database_secret is not None}
    assert mounted == wanted == {"/etc/kommerce/secrets/catalog-1/url",
                                 "/etc/kommerce/secrets/catalog-2/dsn"}


def test_a_sharded_product_service_waits_for_its_map_and_mounts_no_secret_before_its_layout(
        ) -> None:
    spec = CommerceServiceSpec.model_validate({**SPEC, "shardLayout": "catalog"})
    assert spec.referenced_config_maps()["catalog-shard-map"] is False
    pod = _children({**SPEC, "shardLayout": "catalog"})["Deployment"]["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "circuit-breakers", "shard-map"}


def test_only_the_product_component_may_name_a_shard_layout() -> None:
    with pytest.raises(InvalidSpec, match="only the product component routes by a shard"):
        render("order-service", "shop", {**SPEC, "component": "order",
                                         "shardLayout": "catalog"}, UID)


def test_a_layout_given_to_an_unsharded_service_changes_nothing() -> None:
    assert _children(shard_layout=LAYOUT) == _children()
