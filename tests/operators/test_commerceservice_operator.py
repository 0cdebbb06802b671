"""The CommerceService operator on the real control plane, running as its own ServiceAccount."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OperatorProcess
from kommerce.testbed.ports import wait_until

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
SHOP_NAMESPACE = "kommerce-shop"
CHILD_KINDS = ("serviceaccount", "deployment", "service", "horizontalpodautoscaler",
               "poddisruptionbudget", "virtualservice.networking.istio.io",
               "destinationrule.networking.istio.io")


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", [])
                 if c["type"] == type_), {})


def _get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _wait_ready(plane: ControlPlane, name: str, namespace: str, timeout: float = 60) -> None:
    def ready() -> bool:
        obj = _get(plane, "commerceservice", name, namespace)
        return obj is not None and _condition(obj, "Ready").get("status") == "True" and \
            obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    wait_until(ready, timeout=timeout, what=f"CommerceService {namespace}/{name} Ready",
               interval=0.2)


def _small_service(name: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "component": "review", "image": "kommerce/review:1.0.0", "port": 8000,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "routes": [{"pathPrefix": f"/api/{name}", "methods": ["GET"],
                    "rateLimitPerMinute": 60}],
    }
    spec.update(spec_overrides)
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "metadata": {"name": name}, "spec": spec}


def _apply(plane: ControlPlane, manifest: dict[str, Any], namespace: str) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(manifest))


@pytest.fixture(scope="module")
def shop(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    """The whole sample shop, applied as a platform engineer would."""
    control_plane.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests/samples"))
    control_plane.wait_for_default_service_account(SHOP_NAMESPACE)
    return SHOP_NAMESPACE


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"cs-{uuid.uuid4().hex[:8]}")


def test_sample_shop_becomes_ready_with_every_child_owned(control_plane: ControlPlane,
                                                         shop: str) -> None:
    services = control_plane.kubectl_json("get", "commerceservices", "-n", shop)["items"]
    assert len(services) == 8
    for service in services:
        _wait_ready(control_plane, service["metadata"]["name"], shop, timeout=90)
    for service in services:
        name, uid = service["metadata"]["name"], service["metadata"]["uid"]
        for kind in CHILD_KINDS:
            child = _get(control_plane, kind, name, shop)
            assert child is not None, f"{kind} {name} missing"
            owners = child["metadata"]["ownerReferences"]
            assert owners == [{"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
                               "name": name, "uid": uid, "controller": True,
                               "blockOwnerDeletion": True}]
            assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == \
                "kommerce-operator"
    deployment = _get(control_plane, "deployment", "product-service", shop)
    assert deployment is not None
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (strategy["maxSurge"], strategy["maxUnavailable"]) == (1, 0)
    printed = control_plane.kubectl("get", "commerceservices", "-n", shop).stdout
    assert "product-service" in printed and "True" in printed


def test_gateway_route_table_lists_every_route(control_plane: ControlPlane, shop: str) -> None:
    def table() -> dict[str, Any] | None:
        cm = _get(control_plane, "configmap", "kommerce-gateway-routes", shop)
        return json.loads(cm["data"]["routes.json"]) if cm else None

    wait_until(lambda: table() is not None and len({r["service"] for r in table()["routes"]})
               == 7, timeout=30, what="route table with the seven routed services")
    routes = {r["pathPrefix"]: r for r in table()["routes"]}  # type: ignore[index]
    assert routes["/api/products"]["rateLimitPerMinute"] == 100
    assert routes["/api/orders"]["rateLimitPerMinute"] == 50


def _reconciles(operator: OperatorProcess) -> float:
    text = httpx.get(operator.metrics_url, timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kommerce_operator_reconciles_total{")
               and 'kind="CommerceService"' in line and 'outcome="success"' in line)


def _hpas_settled(plane: ControlPlane, namespace: str) -> bool:
    deployments = {d["metadata"]["name"]: d for d in
                   plane.kubectl_json("get", "deployments", "-n", namespace)["items"]}
    for hpa in plane.kubectl_json("get", "horizontalpodautoscalers", "-n", namespace)["items"]:
        target = deployments.get(hpa["spec"]["scaleTargetRef"]["name"])
        if target is None:
            return False
        replicas = target["spec"].get("replicas", 1)
        if replicas == 0:
            continue  # scaled to zero (handed to a rollout): the HPA leaves it alone
        if not hpa["spec"].get("minReplicas", 1) <= replicas <= hpa["spec"]["maxReplicas"]:
            return False
        if target.get("status", {}).get("availableReplicas", 0) != replicas:
            return False
    return True


def test_operator_restart_reconciles_everything_and_writes_nothing(
        control_plane: ControlPlane, kommerce_operator: OperatorProcess, shop: str) -> None:
    names = [s["metadata"]["name"] for s in
             control_plane.kubectl_json("get", "commerceservices", "-n", shop)["items"]]
    for name in names:
        _wait_ready(control_plane, name, shop, timeout=90)
    # The HPA controller raises a new Deployment to minReplicas on its first sync (every
    # 15 s), which moves the Deployment, its PDB and the service's status: let it settle.
    wait_until(lambda: _hpas_settled(control_plane, shop), timeout=60,
               what="every HPA has brought its Deployment to its replica range", interval=0.5)
    for name in names:
        _wait_ready(control_plane, name, shop, timeout=90)

    def versions() -> dict[tuple[str, str], str]:
        """What only a write of ours would move: the resourceVersion, except for HPAs, whose
        status the HPA controller rewrites on every sync (and which carry no generation);
        for them the spec itself."""
        found = {}
        for kind in (*CHILD_KINDS, "commerceservice"):
            for item in control_plane.kubectl_json("get", kind, "-n", shop)["items"]:
                meta = item["metadata"]
                found[(kind, meta["name"])] = json.dumps(item["spec"], sort_keys=True) \
                    if kind == "horizontalpodautoscaler" else meta["resourceVersion"]
        return found

    before = versions()
    kommerce_operator.restart()
    # Kopf resumes every CommerceService after a restart: a full reconcile of each.
    wait_until(lambda: _reconciles(kommerce_operator) >= len(names), timeout=60,
               what="every CommerceService reconciled after the restart", interval=0.3)
    assert versions() == before


def test_hand_edited_deployment_is_restored(control_plane: ControlPlane, shop: str) -> None:
    _wait_ready(control_plane, "search-service", shop, timeout=90)
    original = _get(control_plane, "deployment", "search-service", shop)
    assert original is not None
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]
    control_plane.kubectl("patch", "deployment", "search-service", "-n", shop, "--type=json",
                          "-p", json.dumps([{"op": "replace",
                                             "path": "/spec/template/spec/containers/0/image",
                                             "value": "evil/image:latest"}]))

    def restored() -> bool:
        live = _get(control_plane, "deployment", "search-service", shop)
        return live is not None and \
            live["spec"]["template"]["spec"]["containers"][0]["image"] == image
    wait_until(restored, timeout=15, what="image restored", interval=0.2)


def test_hand_deleted_service_is_recreated(control_plane: ControlPlane, shop: str) -> None:
    _wait_ready(control_plane, "shipping-service", shop, timeout=90)
    before = _get(control_plane, "service", "shipping-service", shop)
    assert before is not None
    control_plane.kubectl("delete", "service", "shipping-service", "-n", shop)

    def recreated() -> bool:
        live = _get(control_plane, "service", "shipping-service", shop)
        return live is not None and live["metadata"]["uid"] != before["metadata"]["uid"]
    wait_until(recreated, timeout=15, what="service recreated", interval=0.2)
    events = control_plane.kubectl("get", "events", "-n", shop, "--field-selector",
                                   "involvedObject.name=shipping-service,reason=DriftRepaired",
                                   "-o", "name").stdout
    assert events.strip()


def test_deleting_the_resource_removes_its_children(control_plane: ControlPlane,
                                                    namespace: str) -> None:
    _apply(control_plane, _small_service("doomed"), namespace)
    _wait_ready(control_plane, "doomed", namespace)
    control_plane.kubectl("delete", "commerceservice", "doomed", "-n", namespace,
                          "--wait=true")

    def all_gone() -> bool:
        return all(_get(control_plane, kind, "doomed", namespace) is None
                   for kind in CHILD_KINDS)
    wait_until(all_gone, timeout=30, what="children garbage-collected", interval=0.3)
    assert _get(control_plane, "configmap", "kommerce-gateway-routes", namespace) is None


def test_missing_secret_is_reported_as_degraded_and_clears_when_created(
        control_plane: ControlPlane, namespace: str) -> None:
    service = _small_service("needs-db", connections={
        "database": {"secretKeyRef": {"name": "review-db", "key": "url"}}})
    _apply(control_plane, service, namespace)

    def degraded() -> dict[str, Any]:
        obj = _get(control_plane, "commerceservice", "needs-db", namespace) or {}
        return _condition(obj, "Degraded")

    wait_until(lambda: degraded().get("status") == "True", timeout=30, what="Degraded")
    assert degraded()["reason"] == "SecretNotFound"
    assert "Secret review-db not found" in degraded()["message"]
    control_plane.kubectl("create", "secret", "generic", "review-db", "-n", namespace,
                          "--from-literal=url=postgresql://db/review")
    wait_until(lambda: degraded().get("status") == "False", timeout=60,
               what="Degraded cleared after the Secret exists")


def test_disabling_autoscaling_prunes_the_hpa(control_plane: ControlPlane,
                                              namespace: str) -> None:
    service = _small_service("fixed")
    _apply(control_plane, service, namespace)
    _wait_ready(control_plane, "fixed", namespace)
    assert _get(control_plane, "horizontalpodautoscaler", "fixed", namespace) is not None
    changed = copy.deepcopy(service)
    changed["spec"]["autoscaling"] = {"enabled": False}
    changed["spec"]["replicas"] = 2
    _apply(control_plane, changed, namespace)
    wait_until(lambda: _get(control_plane, "horizontalpodautoscaler", "fixed", namespace)
               is None, timeout=30, what="HPA pruned")
    _wait_ready(control_plane, "fixed", namespace)
    deployment = _get(control_plane, "deployment", "fixed", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 2


def test_operator_service_account_has_no_rights_beyond_its_job(
        control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> None:
    as_operator = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"

    def can(*args: str) -> bool:
        result = control_plane.kubectl("auth", "can-i", *args, f"--as={as_operator}",
                                       check=False)
        return result.stdout.strip() == "yes"

    assert can("patch", "deployments", "-n", SHOP_NAMESPACE)
    assert can("watch", "commerceservices.kommerce.io", "--all-namespaces")
    assert not can("create", "pods", "-n", SHOP_NAMESPACE)
    assert not can("create", "secrets", "-n", SHOP_NAMESPACE)
    assert not can("delete", "commerceservices.kommerce.io", "-n", SHOP_NAMESPACE)
    assert not can("patch", "nodes")
    assert not can("create", "clusterroles.rbac.authorization.k8s.io")
    # Kopf and our client log a refused call as forbidden (HTTP 403); a bare "403" could be
    # part of a uid in the log.
    assert "forbidden" not in kommerce_operator.log().lower()
