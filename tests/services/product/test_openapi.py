"""Property-based: no request the OpenAPI document allows makes the service answer 5xx.

The service runs under uvicorn on loopback (as in production, with its real lifespan), and
schemathesis sends generated requests with an admin and service token, so the write paths
are reached and not just refused with 401 or 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis

from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from services.product.app import create_app
from tests.services.fuzz import served, server_errors

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
    with served(app, "product") as base_url:
        # Both roles, so the catalog writes and the checkout's reservations are reached.
        token = TokenService(service_settings).issue_access("fuzzer", ["admin", "service"]).token
        yield Served(base_url, {"Authorization": f"Bearer {token}"}, app.openapi())


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
    rows = seed(served_product) if target == "existing rows" else None
    failures = server_errors(
        served_product.openapi, served_product.base_url, served_product.headers,
        aim=(lambda case: point_at(case, rows)) if rows is not None else None,
        max_examples=MAX_EXAMPLES)
    assert not failures, "\n".join(failures)
