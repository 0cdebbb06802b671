"""The operators and the services meet on a real node: every Pod the operator renders starts
a container from the project's image, passes its probes, reads its mounted ConfigMaps and
answers requests, found by Service DNS; a blue-green flip moves live traffic.

The tests run in file order on one shared shop (``tests/node/conftest.py``); each leaves the
shop as it found it, so any one of them can also run alone.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from kommerce.testbed.node_shop import (
    NEXT_SHOP_IMAGE,
    OPERATOR_NAMESPACE,
    SHOP_IMAGE,
    SHOP_NAMESPACE,
    NodeShop,
)
from kommerce.testbed.ports import wait_until
from kommerce.testbed.traffic import Traffic

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

SHIPPING_ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James Square", "city": "London",
                    "postal_code": "SW1Y 4JH", "country": "GB"}


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_operator_runs_in_its_pod_under_its_service_account(node_shop: NodeShop) -> None:
    pods = node_shop.pods("app.kubernetes.io/name=kommerce-operator", OPERATOR_NAMESPACE)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == "kommerce-operator"
    assert pod["spec"]["containers"][0]["image"] == SHOP_IMAGE
    assert _ready(pod)
    # Its liveness probe has had time to fail three times over; it never did.
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    wait_until(lambda: _running_seconds(started) > 45, timeout=60, what="45 s of operator")
    pod = node_shop.pods("app.kubernetes.io/name=kommerce-operator", OPERATOR_NAMESPACE)[0]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    # It takes part in Kopf's peering (the leader election between operator instances)
    # under its Pod's name.
    peering = node_shop.json("get", "clusterkopfpeering", "kommerce")
    peers = list((peering.get("status") or {}).keys())
    assert any(pod["metadata"]["name"] in peer for peer in peers), peers


def _running_seconds(started_at: str) -> float:
    from datetime import UTC, datetime

    started = datetime.strptime(started_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - started).total_seconds()


def test_every_commerceservice_is_ready_because_its_pods_pass_ready(
        node_shop: NodeShop) -> None:
    assert node_shop.not_ready() == []
    services = node_shop.json("get", "commerceservices", "-n", SHOP_NAMESPACE)["items"]
    assert len(services) == 8
    for service in services:
        name = service["metadata"]["name"]
        pods = node_shop.pods(f"app.kubernetes.io/instance={name}")
        assert pods, f"{name} has no Pods"
        serving = [p for p in pods if _ready(p)]
        assert serving, f"{name}: no Pod passed /ready"
        for pod in serving:
            container = pod["spec"]["containers"][0]
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
            assert pod["status"]["containerStatuses"][0]["ready"] is True


def _client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, trust_env=False)


def test_a_shopper_orders_through_the_gateway_service(node_shop: NodeShop) -> None:
    """Register to CONFIRMED through the gateway's Service: the gateway finds each service
    by the route table the operator mounted, the order service its saga's participants by
    Service DNS, the payment service stripe-mock and Kafka by the selector-less Services."""
    api = _client(f"{node_shop.service_url('gateway')}/api")
    email = f"shopper-{uuid.uuid4().hex[:12]}@example.com"
    registered = api.post("/auth/register", json={
        "email": email, "password": "correct-horse-battery-staple",
        "full_name": "Node Shopper"})
    assert registered.status_code == 201, registered.text
    login = api.post("/auth/login", json={"email": email,
                                           "password": "correct-horse-battery-staple"})
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    listed = api.get("/products", params={"q": "headphones", "in_stock": "true", "limit": 20})
    assert listed.status_code == 200, listed.text
    variant = next(v for p in listed.json()["items"] for v in p["variants"]
                   if v["stock"]["available"] > 0)
    cart = api.post("/cart/items", headers=auth, json={
        "variant_id": variant["id"], "quantity": 1, "currency": "eur"})
    assert cart.status_code == 200, cart.text
    placed = api.post("/cart/checkout", headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                      json={"payment_method": "pm_card_visa",
                            "shipping_address": SHIPPING_ADDRESS})
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]

    def order() -> dict[str, Any]:
        response = api.get(f"/orders/{order_id}", headers=auth)
        assert response.status_code == 200, response.text
        return dict(response.json())

    wait_until(lambda: order()["status"] in ("CONFIRMED", "CANCELLED", "FAILED"),
               timeout=120, what=f"order {order_id} to settle", interval=2)
    settled = order()
    assert settled["status"] == "CONFIRMED", settled


# -- the ShardLayout's map in the product Pods ----------------------------------------------

def _products_on(shop: NodeShop, database: str, category: str) -> int:
    async def count() -> int:
        # The product service's schema, as its Pods set it (services.core.db).
        connection = await asyncpg.connect(shop.backends.postgres.libpq_dsn(database),
                                           server_settings={"search_path": "product_service"})
        try:
            return int(await connection.fetchval(
                "SELECT count(*) FROM products WHERE category = $1", category))
        finally:
            await connection.close()

    return asyncio.run(count())


def _product_pods(shop: NodeShop) -> list[dict[str, Any]]:
    return [p for p in shop.pods("app.kubernetes.io/instance=product-service") if _ready(p)]


def test_product_pods_route_by_the_mounted_shard_map_and_take_a_new_one_without_restart(
        node_shop: NodeShop) -> None:
    layout = node_shop.json("get", "shardlayout", "product-catalog", "-n", SHOP_NAMESPACE)
    first = layout["status"]["mapVersion"]
    # The seeded catalog went where the map says, through the Secrets mounted beside it.
    assert _products_on(node_shop, "kommerce_shard_2", "clothing") > 0
    assert _products_on(node_shop, "kommerce_shard_1", "clothing") == 0
    pods = _product_pods(node_shop)
    assert pods and all(_metric(pod, "shard_map_loads_total", version=first) >= 1
                        for pod in pods)
    before = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["restartCount"]
              for p in pods}

    # A category with no products yet gets a shard: a new map, and no data to move.
    node_shop.kubectl("patch", "shardlayout", "product-catalog", "-n", SHOP_NAMESPACE,
                      "--type", "json", "-p", json.dumps([{
                          "op": "add", "path": "/spec/shards/2/categories/-",
                          "value": "toys"}]))
    wait_until(lambda: node_shop.json("get", "shardlayout", "product-catalog", "-n",
                                      SHOP_NAMESPACE)["status"].get("mapVersion") != first,
               timeout=60, what="the new shard map published", interval=0.5)
    second = node_shop.json("get", "shardlayout", "product-catalog", "-n",
                            SHOP_NAMESPACE)["status"]["mapVersion"]
    wait_until(lambda: all(_metric(pod, "shard_map_loads_total", version=second) >= 1
                           for pod in pods), timeout=120,
               what=f"every product Pod to take shard map {second} into force", interval=2)
    after = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["restartCount"]
             for p in _product_pods(node_shop)}
    assert after == before  # the same Pods, none restarted


# -- blue-green under live traffic ---------------------------------------------------------

def _rollout(shop: NodeShop) -> dict[str, Any]:
    return shop.json("get", "bluegreenrollouts", "product-service", "-n", SHOP_NAMESPACE)


def _patch_rollout(shop: NodeShop, patch: dict[str, Any]) -> float:
    shop.kubectl("patch", "bluegreenrollout", "product-service", "-n", SHOP_NAMESPACE,
                 "--type", "merge", "-p", json.dumps(patch))
    return time.monotonic()


def _wait_for_only(shop: NodeShop, traffic: Traffic, color: str, after: float,
                   timeout: float = 240) -> float:
    """Seconds from ``after`` until every answer came from ``color`` (held for 3 s); a
    promotion first scales the colour up and runs its checks, so this can take a while."""
    def settled() -> bool:
        last_other = traffic.all_after(color, after)
        return last_other is not None and time.monotonic() - (after + last_other) > 3
    try:
        wait_until(settled, timeout=timeout, what=f"every answer from {color}", interval=0.5)
    except TimeoutError as error:
        status = _rollout(shop).get("status", {})
        raise AssertionError(f"{error}; rollout status: {json.dumps(status)[:1500]}") from None
    moved = traffic.all_after(color, after)
    assert moved is not None
    return moved


def test_a_flip_under_live_traffic_fails_no_request(node_shop: NodeShop) -> None:
    """Stage green, promote, abort back to blue, promote again and let blue scale down, all
    under a steady load on the product Service (new connections, as kube-proxy balances
    them) and through the gateway: no request fails at any step."""
    before = _rollout(node_shop)
    assert before["status"]["activeColor"] == "blue"
    # The sample's error-rate check samples 30 s; a shorter sample keeps the test short
    # without changing what is measured (the checks pass before traffic moves).
    _patch_rollout(node_shop, {"spec": {"green": {"image": NEXT_SHOP_IMAGE},
                                        "scaleDownDelaySeconds": 40,
                                        "prePromotionChecks": {"errorRate": {
                                            "sampleSeconds": 10}}}})
    node_shop.wait_for_deployment(SHOP_NAMESPACE, "product-service-green", timeout=300)
    wait_until(lambda: _rollout(node_shop)["status"].get("phase") in ("Healthy", "Ready",
                                                                       "Staged", "Paused"),
               timeout=120, what="green staged", interval=1)
    direct = Traffic(f"{node_shop.service_url('product-service')}/products?limit=1")
    # Through the gateway at a rate under its per-address limit on /api/products.
    gateway = Traffic(f"{node_shop.service_url('gateway')}/api/products?limit=1", workers=1,
                      fresh_connections=False, rate=1.2)
    timings: dict[str, float | None] = {}
    with direct.running(), gateway.running():
        time.sleep(3)
        assert {s.color for s in direct.since(0)} == {"blue"}
        promoted = _patch_rollout(node_shop, {"spec": {"activeColor": "green",
                                                       "abort": False}})
        timings["promote: all green"] = _wait_for_only(node_shop, direct, "green", promoted)
        timings["promote: first green"] = direct.first("green", promoted)
        aborted = _patch_rollout(node_shop, {"spec": {"abort": True}})
        timings["abort: all blue"] = _wait_for_only(node_shop, direct, "blue", aborted)
        timings["abort: first blue"] = direct.first("blue", aborted)
        again = _patch_rollout(node_shop, {"spec": {"activeColor": "green", "abort": False}})
        timings["promote again: all green"] = _wait_for_only(node_shop, direct, "green", again)
        # Blue goes after scaleDownDelaySeconds; its Pods stop while traffic runs.
        wait_until(lambda: not node_shop.pods(
            "app.kubernetes.io/instance=product-service,kommerce.io/color=blue"),
            timeout=180, what="blue's Pods gone", interval=2)
        time.sleep(3)
    print("flip timings (s):", {k: None if v is None else round(v, 2)
                                for k, v in timings.items()})
    print(f"requests: {len(direct.samples)} direct, {len(gateway.samples)} via the gateway")
    assert direct.failures() == []
    assert gateway.failures() == []
    assert {s.color for s in gateway.samples} >= {"green"}
    after = _rollout(node_shop)["status"]
    assert after["activeColor"] == "green"
    service = node_shop.json("get", "service", "product-service", "-n", SHOP_NAMESPACE)
    assert service["spec"]["selector"].get("kommerce.io/color") == "green"


# -- drift and a killed operator ------------------------------------------------------------

def test_a_hand_edited_service_is_put_back(node_shop: NodeShop) -> None:
    node_shop.kubectl("patch", "service", "user-service", "-n", SHOP_NAMESPACE, "--type",
                      "merge", "-p", '{"spec":{"ports":[{"name":"http","port":81}]}}')

    def ports() -> list[tuple[int, object]]:
        service = node_shop.json("get", "service", "user-service", "-n", SHOP_NAMESPACE)
        return [(port["port"], port["targetPort"]) for port in service["spec"]["ports"]]

    wait_until(lambda: ports() == [(80, "http")], timeout=120,
               what="user-service back on port 80 to the container's port", interval=1)

    # And it serves there again through the Service, once kube-proxy has the rule back.
    def serves() -> bool:
        with _client(node_shop.service_url("user-service")) as client:
            return client.get("/health", headers={"Connection": "close"}).status_code == 200

    wait_until(serves, timeout=30, what="user-service answering on port 80", interval=0.5)


def _traffic_on(shop: NodeShop, color: str) -> bool:
    """The Service selects ``color`` and every VirtualService route sends it 100 %."""
    service = shop.json("get", "service", "product-service", "-n", SHOP_NAMESPACE)
    if service["spec"]["selector"].get("kommerce.io/color") != color:
        return False
    routes = shop.json("get", "virtualservice", "product-service", "-n",
                       SHOP_NAMESPACE)["spec"].get("http", [])
    return bool(routes) and all(
        any(d["destination"].get("subset") == color and d.get("weight") == 100
            for d in route["route"]) for route in routes)


def test_an_operator_killed_mid_flip_is_replaced_and_converges(node_shop: NodeShop) -> None:
    state = _rollout(node_shop)["status"]
    target = "blue" if state["activeColor"] == "green" else "green"
    if not (_rollout(node_shop)["spec"].get(target) or {}).get("image"):
        _patch_rollout(node_shop, {"spec": {target: {"image": NEXT_SHOP_IMAGE}}})
    node_shop.wait_for_deployment(SHOP_NAMESPACE, f"product-service-{target}", timeout=300)
    operator = node_shop.pods("app.kubernetes.io/name=kommerce-operator",
                              OPERATOR_NAMESPACE)[0]["metadata"]["name"]
    _patch_rollout(node_shop, {"spec": {"activeColor": target, "abort": False}})
    node_shop.kubectl("delete", "pod", operator, "-n", OPERATOR_NAMESPACE, "--grace-period=0",
                      "--force", "--wait=false")

    def replaced() -> bool:
        pods = node_shop.pods("app.kubernetes.io/name=kommerce-operator", OPERATOR_NAMESPACE)
        return any(p["metadata"]["name"] != operator and _ready(p) for p in pods)

    wait_until(replaced, timeout=180, what="a new operator Pod Ready", interval=1)

    def converged() -> bool:
        status = _rollout(node_shop).get("status", {})
        return status.get("activeColor") == target and _traffic_on(node_shop, target)

    try:
        wait_until(converged, timeout=240, what=f"status and traffic on {target}", interval=1)
    except TimeoutError as error:
        status = _rollout(node_shop).get("status", {})
        raise AssertionError(f"{error}; rollout status: {json.dumps(status)[:2000]}") from None
    # And the Service really answers from that colour.
    answer = _client(node_shop.service_url("product-service")).get(
        "/products?limit=1", headers={"Connection": "close"})
    assert answer.headers.get("x-kommerce-color") == target


# -- the CircuitBreakerPolicy's client settings in the order Pods ---------------------------

def _metric(pod: dict[str, Any], name: str, **labels: str) -> float:
    """A metric's value summed over the samples matching ``labels``, from the Pod itself."""
    from prometheus_client.parser import text_string_to_metric_families

    with _client(f"http://{pod['status']['podIP']}:8000") as client:
        text = client.get("/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


def _order_pod(shop: NodeShop) -> dict[str, Any]:
    pods = [p for p in shop.pods("app.kubernetes.io/instance=order-service") if _ready(p)]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _set_payment_backend(shop: NodeShop, backend: str, api_base: str | None) -> None:
    """Point the payment service's Pods at a Stripe that refuses every call (or back)."""
    service = shop.json("get", "commerceservice", "payment-service", "-n", SHOP_NAMESPACE)
    env = [e for e in service["spec"]["env"]
           if e["name"] not in ("KOMMERCE_PAYMENT_BACKEND", "KOMMERCE_STRIPE_API_BASE")]
    env.append({"name": "KOMMERCE_PAYMENT_BACKEND", "value": backend})
    if api_base:
        env.append({"name": "KOMMERCE_STRIPE_API_BASE", "value": api_base})
    shop.kubectl("patch", "commerceservice", "payment-service", "-n", SHOP_NAMESPACE,
                 "--type", "merge", "-p", json.dumps({"spec": {"env": env}}))
    time.sleep(2)
    shop.wait_for_deployment(SHOP_NAMESPACE, "payment-service", timeout=300)


def test_the_breaker_policy_trips_on_failing_payment_pods_and_reloads_live(
        node_shop: NodeShop) -> None:
    order_pod = _order_pod(node_shop)
    restarts = order_pod["status"]["containerStatuses"][0]["restartCount"]
    reloads = _metric(order_pod, "config_reloads_total", config="circuit-breaker")
    # A changed policy reaches the order Pod's mounted file and is taken in, no restart.
    node_shop.kubectl("patch", "circuitbreakerpolicy", "payment-service", "-n", SHOP_NAMESPACE,
                      "--type", "merge", "-p", json.dumps({"spec": {"client": {
                          "resetTimeout": "5s", "errorThresholdPercentage": 20}}}))
    wait_until(lambda: _metric(order_pod, "config_reloads_total",
                               config="circuit-breaker") > reloads,
               timeout=120, what="the order Pod to reload its breaker settings", interval=2)

    api = _client(f"{node_shop.service_url('gateway')}/api")
    email = f"breaker-{uuid.uuid4().hex[:12]}@example.com"
    assert api.post("/auth/register", json={"email": email, "password": "correct-horse-9",
                                            "full_name": "Breaker Tester"}).status_code == 201
    token = api.post("/auth/login", json={"email": email, "password": "correct-horse-9"})
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    listed = api.get("/products", params={"q": "headphones", "in_stock": "true", "limit": 20})
    variant = next(v for p in listed.json()["items"] for v in p["variants"]
                   if v["stock"]["available"] > 0)

    def checkout() -> str:
        assert api.post("/cart/items", headers=auth, json={
            "variant_id": variant["id"], "quantity": 1, "currency": "eur"}).status_code == 200
        placed = api.post("/cart/checkout",
                          headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                          json={"payment_method": "pm_card_visa",
                                "shipping_address": SHIPPING_ADDRESS})
        assert placed.status_code == 202, placed.text
        return str(placed.json()["id"])

    _set_payment_backend(node_shop, "stripe", "http://127.0.0.1:9")
    placed: list[str] = []

    def opened() -> bool:
        """Checkouts until the breaker opens: the first may still reach a stopping Pod of
        the old settings over a pooled connection (its preStop keeps it serving)."""
        if _metric(order_pod, "circuit_breaker_state", target="payment") == 2:
            return True
        placed.append(checkout())
        return False

    try:
        wait_until(opened, timeout=180, what="the order Pod's breaker for payment to open",
                   interval=3)
        failing = placed[-1] if placed else checkout()
    finally:
        _set_payment_backend(node_shop, "sandbox", None)
    # Payment serves again: the breaker half-opens after its (new) 5 s reset, a trial call
    # succeeds, and the order that waited goes through.
    wait_until(lambda: _metric(order_pod, "circuit_breaker_state", target="payment") == 0,
               timeout=180, what="the breaker for payment to close again", interval=2)

    def status(order_id: str) -> str:
        return str(api.get(f"/orders/{order_id}", headers=auth).json()["status"])

    wait_until(lambda: status(failing) in ("CONFIRMED", "CANCELLED"), timeout=180,
               what="the order placed while payment failed to settle", interval=2)
    assert _order_pod(node_shop)["status"]["containerStatuses"][0]["restartCount"] == restarts


# -- autoscaling on the Pods' real CPU ------------------------------------------------------

def _pod_cpu_millicores(shop: NodeShop, selector: str) -> dict[str, float]:
    """Each Pod's CPU as metrics-server reports it (through the apiserver's aggregation
    layer, the way the HPA controller reads it)."""
    listing = json.loads(shop.kubectl(
        "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{SHOP_NAMESPACE}/pods"
                        f"?labelSelector={selector}").stdout)
    cpu: dict[str, float] = {}
    for pod in listing["items"]:
        total = 0.0
        for container in pod["containers"]:
            value = container["usage"]["cpu"]  # "12345678n", "15m" or "1"
            total += (float(value[:-1]) / 1e6 if value.endswith("n") else
                      float(value[:-1]) if value.endswith("m") else float(value) * 1000)
        cpu[pod["metadata"]["name"]] = total
    return cpu


def test_an_hpa_scales_a_service_up_on_real_cpu_under_load_and_back_down(
        node_shop: NodeShop) -> None:
    """The search service under a search loop: metrics-server reports its Pods' CPU from
    the kubelet, its HPA (rendered by the operator) adds a Pod, which becomes Ready and
    serves; with the load gone it goes back to one. Its scale-down window is shortened for
    the test (the sample waits five minutes) and restored after."""
    name = "search-service"
    selector = f"app.kubernetes.io/instance={name}"
    original = node_shop.json("get", "commerceservice", name, "-n",
                              SHOP_NAMESPACE)["spec"]["autoscaling"]
    quick = {"minReplicas": 1, "maxReplicas": 2, "behavior": {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {"stabilizationWindowSeconds": 0,
                      "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}}
    node_shop.kubectl("patch", "commerceservice", name, "-n", SHOP_NAMESPACE, "--type",
                      "merge", "-p", json.dumps({"spec": {"autoscaling": quick}}))
    try:
        wait_until(lambda: _pod_cpu_millicores(node_shop, selector) != {}, timeout=90,
                   what=f"metrics of {name}'s Pods", interval=2)

        def replicas() -> tuple[int, int]:
            status = node_shop.json("get", "deployment", name, "-n", SHOP_NAMESPACE)["status"]
            return int(status.get("replicas", 0)), int(status.get("readyReplicas", 0))

        # Earlier tests' load may have scaled it up; with no load it comes back to one.
        wait_until(lambda: replicas() == (1, 1), timeout=240,
                   what=f"{name} at one Pod before the load", interval=2)
        load = Traffic(f"{node_shop.service_url(name)}/search?q=shoes&limit=20", workers=4,
                       fresh_connections=False)
        with load.running():
            wait_until(lambda: replicas() == (2, 2), timeout=240,
                       what=f"{name} scaled to 2 Ready Pods under load", interval=2)
            busy = _pod_cpu_millicores(node_shop, selector)
            # The new Pod serves: the Service balances the loop's requests onto it too.
            time.sleep(5)
        assert load.failures() == [], load.failures()[:5]
        hpa = node_shop.json("get", "hpa", name, "-n", SHOP_NAMESPACE)
        cpu = next(m for m in hpa["status"]["currentMetrics"]
                   if m["resource"]["name"] == "cpu")["resource"]["current"]
        assert cpu["averageUtilization"] > 0, hpa["status"]
        print(f"under load: Pod CPU {busy} millicores; HPA saw {cpu}")

        wait_until(lambda: replicas() == (1, 1), timeout=240,
                   what=f"{name} back to one Pod without load", interval=2)
        events = node_shop.kubectl("get", "events", "-n", SHOP_NAMESPACE, "--field-selector",
                                   f"involvedObject.kind=HorizontalPodAutoscaler,"
                                   f"involvedObject.name={name}").stdout
        assert "New size: 2; reason: cpu resource utilization" in events, events
        assert "New size: 1" in events, events
    finally:
        node_shop.kubectl("patch", "commerceservice", name, "-n", SHOP_NAMESPACE, "--type",
                          "merge", "-p", json.dumps({"spec": {"autoscaling": {
                              **quick, **original, "behavior": original.get("behavior")}}}))
