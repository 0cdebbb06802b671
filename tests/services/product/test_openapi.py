"""Property-based: no request the OpenAPI document allows makes the service answer 5xx.

The service runs under uvicorn on loopback (as in production, with its real lifespan), and
schemathesis sends generated requests with an admin token, so the write paths are reached
and not just refused with 401.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from kommerce.testbed.ports import free_port, wait_until
from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from services.product.app import create_app

from .conftest import product_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: Per operation; enough to reach every validator, small enough for a 2-core CI run.
MAX_EXAMPLES = 25


@dataclass(frozen=True)
class Served:
    base_url: str
    headers: dict[str, str]
    openapi: dict[str, object]


@pytest.fixture(scope="module")
def served_product(product_database_url: str, redis_server: RedisServer) -> Iterator[Served]:
    service_settings = product_settings(product_database_url, redis_server.url)
    app = create_app(service_settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="product-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60, what="the product service",
                   alive=lambda: None if thread.is_alive() else "server thread ended")
        token = TokenService(service_settings).issue_access("fuzzer", ["admin"]).token
        yield Served(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"},
                     app.openapi())
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def seed(served: Served) -> dict[str, str]:
    """A category, a product and a reservation, so generated requests can reach them."""
    with httpx.Client(base_url=served.base_url, headers=served.headers, timeout=30) as client:
        client.post("/categories", json={"slug": "seeded", "name": "Seeded"}).raise_for_status()
        product = client.post("/products", json={
            "category": "seeded", "name": "Seeded", "variants": [
                {"sku": f"SEED-{i}", "price": {"amount": 100, "currency": "EUR"},
                 "stock": 1000} for i in range(2)]}).json()
        variant_id = product["variants"][0]["id"]
        reservation = client.post("/inventory/reservations", json={
            "id": str(uuid.uuid4()), "lines": [{"variant_id": variant_id, "quantity": 1}]})
        reservation.raise_for_status()
    return {"slug": "seeded", "product_id": product["id"], "variant_id": variant_id,
            "reservation_id": reservation.json()["id"]}


def point_at(case: schemathesis.Case, rows: dict[str, str]) -> None:
    """Aim a generated request at the seeded rows, keeping everything else it carries."""
    for name in list(case.path_parameters or {}):
        if name in rows:
            case.path_parameters[name] = rows[name]  # type: ignore[index]
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("category"), str):
            body["category"] = rows["slug"]
        for line in body.get("lines") or []:
            if isinstance(line, dict):
                line["variant_id"] = rows["variant_id"]


@pytest.mark.parametrize("target", ["generated ids", "existing rows"])
def test_no_generated_request_gets_a_server_error(served_product: Served, target: str) -> None:
    api = schemathesis.openapi.from_dict(served_product.openapi)
    rows = seed(served_product) if target == "existing rows" else None
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            if rows is not None:
                point_at(case, rows)
            response = case.call(base_url=served_product.base_url,
                                 headers=served_product.headers, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text}")

        try:
            no_server_error()
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])

    assert not failures, "\n".join(failures)
