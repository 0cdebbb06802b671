"""``kommerce up`` as a newcomer runs it: the platform starts, serves the README's shopper
session (register to a confirmed order) through the gateway, reports itself, stops cleanly
and starts warm without seeding again; with ``--cluster``, the README's release manager
stages, promotes and aborts a blue-green release of the product service.

One test per session on purpose: the platform takes seconds to start, and the second start
is the point of the warm-start and no-reseed checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kommerce.platform.seed import (
    CATEGORIES,
    PRODUCTS_PER_CATEGORY,
    REVIEWERS,
    demo_products,
    demo_reviews,
)
from kommerce.platform.state import ProcessRecord
from kommerce.testbed.ports import free_port, wait_until
from tests.shop import EXTERNAL_BACKENDS, Kubectl, kommerce

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: The README's shopper (section "Run it"); the requests below are the README's curl lines.
SHOPPER = {"email": "ada@example.com", "password": "correct-horse-battery",
           "full_name": "Ada Lovelace"}

#: The README's checkout: the sandbox's always-approved test card, and where the parcel goes.
CHECKOUT = {"payment_method": "pm_card_visa",
            "shipping_address": {"name": "Ada Lovelace", "line1": "12 St James Square",
                                 "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}}
#: What a confirmed order went through, in the order's own timeline.
CONFIRMED_TIMELINE = ["PENDING", "INVENTORY_RESERVED", "PAID", "SHIPMENT_CREATED", "CONFIRMED"]


def up(data_dir: Path, port: int) -> tuple[float, str]:
    """Start detached; the start time the command printed, and its output."""
    out = kommerce("up", "--detach", "--port", str(port), data_dir=data_dir).stdout
    match = re.search(r"ready in ([0-9.]+) s \((cold|warm) start", out)
    assert match, out
    return float(match.group(1)), out


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "kommerce"
    # Whatever happened, leave nothing running.
    kommerce("down", data_dir=tmp_path / "kommerce", check=False)


def status(data_dir: Path) -> dict[str, Any]:
    result = kommerce("status", "--json", data_dir=data_dir, check=False)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def ports_of(report: dict[str, Any]) -> dict[str, int]:
    return {process["name"]: process["port"] for process in report["processes"]}


def still_running(report: dict[str, Any]) -> list[str]:
    """Which of the processes ``status --json`` listed still run (checked by pid and start
    time, not by asking the state file, which ``down`` removes)."""
    fields = ProcessRecord.__dataclass_fields__
    records = [ProcessRecord(**{k: v for k, v in process.items() if k in fields})
               for process in report["processes"]]
    return [record.name for record in records if record.running()]


def count_in_category(api: httpx.Client, category: str) -> int:
    response = api.get("/products", params={"category": category, "limit": 100})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return len(page["items"])


def shopper_session(api: httpx.Client) -> None:
    """register → log in → browse and search the catalog → open a product → add it to the
    cart → check out → see the order confirmed, as in the README."""
    registered = api.post("/auth/register", json=SHOPPER)
    assert registered.status_code == 201, registered.text
    login = api.post("/auth/login", json={"email": SHOPPER["email"],
                                         "password": SHOPPER["password"]})
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    me = api.get("/users/me", headers=auth)
    assert me.status_code == 200 and me.json()["email"] == SHOPPER["email"], me.text

    found = api.get("/products", params={"q": "headphones", "limit": 5})
    assert found.status_code == 200, found.text
    items = found.json()["items"]
    assert items and all("Headphones" in item["name"] for item in items)

    shoes = api.get("/products", params={"category": "shoes", "in_stock": "true",
                                         "sort": "price_asc", "limit": 10})
    assert shoes.status_code == 200, shoes.text
    cheapest = shoes.json()["items"]
    assert cheapest and {item["category"] for item in cheapest} == {"shoes"}

    product = api.get(f"/products/{items[0]['id']}")
    assert product.status_code == 200, product.text
    assert product.json()["variants"][0]["sku"].startswith("DEMO-")

    checkout(api, auth)


def checkout(api: httpx.Client, auth: dict[str, str]) -> None:
    """The README's cart and checkout: the first in-stock headphones, paid with the
    sandbox's test card; the saga confirms the order a moment later."""
    in_stock = api.get("/products", params={"q": "headphones", "in_stock": "true", "limit": 1})
    assert in_stock.status_code == 200, in_stock.text
    variant = next(v for v in in_stock.json()["items"][0]["variants"]
                   if v["stock"]["available"] > 0)

    cart = api.post("/cart/items", headers=auth,
                    json={"variant_id": variant["id"], "quantity": 1, "currency": "eur"})
    assert cart.status_code == 200, cart.text
    assert cart.json()["total"] == variant["price"]["amount"], cart.text

    placed = api.post("/cart/checkout", headers={**auth, "Idempotency-Key": "ada-order-1"},
                      json=CHECKOUT)
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert order["status"] == "PENDING" and order["total"] == variant["price"]["amount"]

    def order_status() -> str:
        response = api.get(f"/orders/{order['id']}", headers=auth)
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    wait_until(lambda: order_status() in ("CONFIRMED", "CANCELLED"), timeout=30,
               what="the order's saga", interval=0.3)
    detail = api.get(f"/orders/{order['id']}", headers=auth).json()
    assert detail["status"] == "CONFIRMED", detail
    assert [step["status"] for step in detail["timeline"]] == CONFIRMED_TIMELINE, detail

    history = api.get("/orders", headers=auth)
    assert history.status_code == 200 and history.json()[0]["id"] == order["id"], history.text
    assert api.get("/cart", headers=auth).json()["lines"] == [], "checkout empties the cart"
    product = api.get(f"/products/{in_stock.json()['items'][0]['id']}").json()
    after = next(v for v in product["variants"] if v["id"] == variant["id"])
    assert after["stock"]["available"] == variant["stock"]["available"] - 1, after


def reviews_are_published(api: httpx.Client) -> None:
    """A demo product's seeded reviews and rating, through the gateway as the README reads
    them (/api/reviews/products/<id>, the review service's gateway-reachable paths)."""
    product = next(p for p in demo_products() if len(demo_reviews(p)) >= 2)
    seeded = demo_reviews(product)
    found = api.get("/products", params={"q": product["name"], "limit": 1}).json()["items"][0]
    page = api.get(f"/reviews/products/{found['id']}").json()
    rating = api.get(f"/reviews/products/{found['id']}/rating").json()
    assert sorted(r["rating"] for r in page["items"]) == sorted(r["rating"] for _, r in seeded)
    assert rating["count"] == len(seeded), rating


def search_finds_the_seeded_catalog(api: httpx.Client) -> None:
    """The search service indexes the catalog from the product service's events, so it
    catches up a moment after seeding."""
    def indexed() -> bool:
        response = api.get("/search", params={"q": "headphones"})
        return response.status_code == 200 and response.json()["total"] >= 5

    wait_until(indexed, timeout=30, what="search index of the demo catalog", interval=0.5)


def test_up_serves_the_seeded_shop_through_the_gateway_and_restarts_warm(
        data_dir: Path) -> None:
    port = free_port()
    cold_seconds, out = up(data_dir, port)
    assert "cold start" in out and "catalog seeded: 300 products created" in out, out
    reviews = sum(len(demo_reviews(product)) for product in demo_products())
    assert f"reviews seeded: {reviews} written by {len(REVIEWERS)} demo shoppers" in out, out
    assert f"http://127.0.0.1:{port}/api" in out

    report = status(data_dir)
    assert report["ready"] is True, report
    ports = ports_of(report)
    assert {"postgres", "redis", "user", "product", "order", "payment", "shipping", "review",
            "gateway"} <= set(ports)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=10) as api:
        shopper_session(api)
        reviews_are_published(api)
        if "search" in ports:
            search_finds_the_seeded_catalog(api)
        assert count_in_category(api, "garden") == PRODUCTS_PER_CATEGORY
        assert {c["slug"] for c in api.get("/categories").json()} == set(CATEGORIES)

    stopped = kommerce("down", data_dir=data_dir).stdout
    assert "gateway stopped" in stopped and "postgres stopped" in stopped
    assert still_running(report) == []
    assert status(data_dir)["processes"] == []

    warm_seconds, out = up(data_dir, port)
    assert "warm start" in out and "catalog already seeded" in out, out
    assert "reviews already seeded" in out, out
    assert warm_seconds < cold_seconds, (warm_seconds, cold_seconds)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=10) as api:
        # Seeded once: the second start added nothing; the shopper from before still logs in.
        assert count_in_category(api, "garden") == PRODUCTS_PER_CATEGORY
        login = api.post("/auth/login", json={"email": SHOPPER["email"],
                                             "password": SHOPPER["password"]})
        assert login.status_code == 200, login.text
        # ... and still finds the order placed before the restart.
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        orders = api.get("/orders", headers=auth).json()
        assert [order["status"] for order in orders] == ["CONFIRMED"], orders
    assert status(data_dir)["ready"] is True


def bgr_columns(kubectl: Kubectl) -> dict[str, str]:
    """``kubectl get bgr product-service -o wide`` as column -> value."""
    header, row = kubectl("get", "bgr", "product-service", "-o", "wide").splitlines()
    # Columns are cut where the header's names start: the MESSAGE column holds spaces.
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[start:end].strip(): row[start:end].strip()
            for start, end in zip(starts, ends, strict=True)}


def color_behind_gateway_route(kubectl: Kubectl, prefix: str) -> str:
    """Which colour the gateway's route for ``prefix`` reaches: the operator's route table
    (ConfigMap kommerce-gateway-routes) names the upstream Service and the active colour,
    and that Service's selector must pick the same colour."""
    table = json.loads(kubectl.json("get", "configmap", "kommerce-gateway-routes")
                       ["data"]["routes.json"])
    route = next(r for r in table["routes"] if r["pathPrefix"] == prefix)
    host = httpx.URL(route["upstream"]).host
    service, namespace = host.split(".")[:2]
    assert service == route["service"] == "product-service" and namespace == "kommerce-shop"
    selector = kubectl.json("get", "service", service)["spec"]["selector"]
    assert route.get("activeColor") == selector["kommerce.io/color"], (route, selector)
    return str(selector["kommerce.io/color"])


def gateway_routes_to(kubectl: Kubectl, color: str) -> None:
    """The route table follows the flip a moment after the rollout reports it (the
    CommerceService's reconcile republishes it)."""
    wait_until(lambda: color_behind_gateway_route(kubectl, "/api/products") == color,
               timeout=30, what=f"the gateway's /api/products route on {color}", interval=0.3)


@pytest.mark.kube
def test_up_with_the_cluster_lets_a_release_manager_promote_green_and_abort_back_to_blue(
        data_dir: Path) -> None:
    port = free_port()
    # kwok's node, also where a real one could run (tests/node runs the same session there).
    out = kommerce("up", "--detach", "--cluster", "--node", "kwok", "--no-seed", "--port",
                   str(port), data_dir=data_dir, timeout=240).stdout
    report = status(data_dir)
    assert report["ready"] is True, report
    kubeconfig = report["kubeconfig"]
    assert kubeconfig and f"KUBECONFIG={kubeconfig}" in out, out
    assert {"kube-apiserver", "kommerce-operator"} <= {p["name"] for p in report["processes"]}
    kubectl = Kubectl(kubeconfig)
    listed = kubectl("get", "commerceservices", "-o", "name").split()
    assert "commerceservice.kommerce.io/product-service" in listed, listed

    # The README's release manager, step by step.
    kubectl("wait", "--for=condition=Ready", "bgr/product-service", "--timeout=90s")
    assert bgr_columns(kubectl) | {"AGE": ""} == {
        "NAME": "product-service", "SERVICE": "product-service", "ACTIVE": "blue",
        "DESIRED": "blue", "PHASE": "Healthy", "BLUE": "kommerce:0.1.0",
        "GREEN": "kommerce:0.1.0", "READY": "True", "DEGRADED": "False", "REASON": "Healthy",
        "AGE": "", "MESSAGE": "traffic on blue (kommerce:0.1.0)"}
    gateway_routes_to(kubectl, "blue")

    kubectl("patch", "bgr", "product-service", "--type", "merge",
            "-p", '{"spec":{"green":{"image":"kommerce:0.2.0"}}}')
    wait_until(lambda: bgr_columns(kubectl)["PHASE"] == "Paused", timeout=30,
               what="green staged", interval=0.3)
    assert bgr_columns(kubectl)["GREEN"] == "kommerce:0.2.0"

    promoted = kubectl.rollout("promote", "product-service", "--wait")
    assert "traffic on green" in promoted, promoted
    rollout = kubectl.json("get", "bgr", "product-service")
    assert rollout["status"]["activeColor"] == "green", rollout["status"]
    assert rollout["status"]["phase"] == "Healthy", rollout["status"]
    checks = rollout["spec"]["prePromotionChecks"]["http"][0]["url"]
    assert checks == f"http://127.0.0.1:{ports_of(report)['product']}/ready", checks
    assert {"ACTIVE": "green", "PHASE": "Healthy"}.items() <= bgr_columns(kubectl).items()
    gateway_routes_to(kubectl, "green")

    aborted = kubectl.rollout("abort", "product-service", "--wait")
    assert "traffic on blue" in aborted, aborted
    rollout = kubectl.json("get", "bgr", "product-service")
    assert rollout["status"]["activeColor"] == "blue", rollout["status"]
    assert {"ACTIVE": "blue", "DESIRED": "green", "PHASE": "Aborted",
            "READY": "False"}.items() <= bgr_columns(kubectl).items()
    gateway_routes_to(kubectl, "blue")
    assert [(flip["reason"], flip["toColor"]) for flip in rollout["status"]["history"]] == [
        ("Abort", "blue"), ("Promote", "green")]

    kommerce("down", data_dir=data_dir)
    assert still_running(report) == []


def test_a_taken_gateway_port_is_refused_before_anything_starts(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kommerce("up", "--detach", "--port", str(port), data_dir=data_dir,
                          check=False)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stdout, result.stdout
    assert not (data_dir / "postgres").exists()


def test_a_service_that_cannot_start_fails_the_command_with_its_log_and_stops_the_rest(
        data_dir: Path) -> None:
    # Every service refuses the retired shared KOMMERCE_JWT_SECRET at start-up.
    result = kommerce("up", "--detach", "--port", str(free_port()), data_dir=data_dir,
                      check=False, env={"KOMMERCE_JWT_SECRET": "too-short"})
    assert result.returncode == 1, result.stdout
    # Which service the command names depends on which dies first; each one's log says why.
    assert "stopped while starting" in result.stdout and "log tail" in result.stdout, \
        result.stdout
    assert status(data_dir)["processes"] == []  # nothing left running, no state file


#: What seeding the catalog needs (user and product) and the gateway; the rest stays out,
#: so these starts are quicker.
CATALOG_ONLY = [arg for name in ("search", "order", "payment", "shipping", "review")
                for arg in ("--skip", name)]


def test_a_seeding_step_that_gets_no_answer_names_the_step_and_the_service_log_tail(
        data_dir: Path) -> None:
    # The product service becomes ready, then stops answering (SIGSTOP: its port still
    # takes connections, nothing replies), as a service starved on a loaded machine does.
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_BACKENDS}
    command = subprocess.Popen(
        [sys.executable, "-m", "kommerce.cli", "up", "--detach", "--port", str(free_port()),
         *CATALOG_ONLY, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**env, "PYTHONUNBUFFERED": "1"})
    assert command.stdout is not None
    seen = []
    for line in command.stdout:  # the launcher has seen it ready: seeding is next
        seen.append(line)
        if "✓ product ready on" in line:
            break
    state = json.loads((data_dir / "state.json").read_text())
    product = next(p for p in state["processes"] if p["name"] == "product")
    os.kill(product["pid"], signal.SIGSTOP)
    try:
        rest, _ = command.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(product["pid"], signal.SIGCONT)
    out = "".join(seen) + rest
    assert command.returncode == 1, out
    failure = re.search(r"✗ seeding the demo catalog: creating the demo (categories|products) "
                        r"failed \(product service\): (?:GET|POST) /\w+: (\w+)", out)
    assert failure, out
    assert "Timeout" in failure.group(2), out  # the error's type, where its text is empty
    tail = out.split("product log tail:\n", 1)
    assert len(tail) == 2 and tail[1].strip(), out
    assert status(data_dir)["processes"] == []  # everything stopped, the stopped one too
    assert ProcessRecord(**{k: v for k, v in product.items()
                            if k in ProcessRecord.__dataclass_fields__}).running() is False


def test_a_start_that_seeds_is_cold_even_in_an_existing_data_folder(data_dir: Path) -> None:
    port = str(free_port())
    first = kommerce("up", "--detach", "--port", port, "--no-seed", *CATALOG_ONLY,
                     data_dir=data_dir, timeout=300).stdout
    assert "catalog not seeded (--no-seed)" in first and "(cold start: new data folder)" in \
        first, first
    kommerce("down", data_dir=data_dir)

    second = kommerce("up", "--detach", "--port", port, *CATALOG_ONLY, data_dir=data_dir,
                      timeout=300).stdout
    assert "catalog seeded: 300 products created" in second, second
    assert "(cold start: seeded the catalog)" in second, second
    kommerce("down", data_dir=data_dir)

    third = kommerce("up", "--detach", "--port", port, *CATALOG_ONLY, data_dir=data_dir,
                     timeout=300).stdout
    assert "catalog already seeded" in third and "(warm start)" in third, third
