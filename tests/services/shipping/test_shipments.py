"""The shipping service on PostgreSQL: quotes over HTTP, shipments created once per id with
a label record, cancellation only before pickup, tracking that only moves forward, and the
delivery notification published exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.core.events.tables import outbox
from tests.services.shipping.conftest import Service
from tests.services.support import unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PARCEL = {"weight_grams": 1200, "length_mm": 300, "width_mm": 200, "height_mm": 100}
ADDRESS = {"name": "Ann", "line1": "1 Main St", "city": "Springfield",
           "postal_code": "12345", "country": "US"}
T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def shipment_body(**overrides: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "order_id": unique("ord"), "owner": "ann",
            "address": ADDRESS, "parcels": [PARCEL], "service_level": "express",
            "currency": "usd", **overrides}


async def create(service: Service, body: dict[str, Any]) -> Any:
    return await service.client.post("/shipments", json=body,
                                     headers=service.auth("order-service", "service"))


async def track(service: Service, shipment_id: str, status: str, minutes: int) -> Any:
    return await service.client.post(
        f"/shipments/{shipment_id}/tracking", headers=service.auth("carrier", "service"),
        json={"status": status, "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
              "location": "Hub"})


async def events(service: Service, event_type: str, key: str) -> int:
    async with service.database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(outbox).where(
            outbox.c.event_type == event_type, outbox.c.event_key == key)) or 0)


async def test_rates_are_quoted_cheapest_first(service: Service) -> None:
    response = await service.client.post("/rates", json={
        "destination_country": "CA", "parcels": [PARCEL], "currency": "usd"})
    assert response.status_code == 200
    amounts = [q["amount"] for q in response.json()]
    assert amounts == sorted(amounts) and len(amounts) == 3


async def test_an_unshippable_parcel_is_a_client_error(service: Service) -> None:
    response = await service.client.post("/rates", json={
        "destination_country": "US", "currency": "usd",
        "parcels": [{**PARCEL, "weight_grams": 90_000}]})
    assert response.status_code == 422 and response.json()["code"] == "no_rate"


async def test_shipment_is_created_once_per_id_even_concurrently(service: Service) -> None:
    body = shipment_body()
    responses = await asyncio.gather(*(create(service, body) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200] * 4 + [201]
    shipment = responses[0].json()
    assert len({r.json()["tracking_number"] for r in responses}) == 1
    assert shipment["service_level"] == "express" and shipment["label"]["format"] == "record"
    assert await events(service, "shipment.created", body["order_id"]) == 1


async def test_shoppers_cannot_create_shipments(service: Service) -> None:
    response = await service.client.post("/shipments", json=shipment_body(),
                                         headers=service.auth("ann"))
    assert response.status_code == 403


async def test_cancel_before_pickup_only(service: Service) -> None:
    early = (await create(service, shipment_body())).json()
    saga = service.auth("order-service", "service")
    for _ in range(2):
        cancelled = await service.client.post(f"/shipments/{early['id']}/cancel", headers=saga)
        assert cancelled.json()["status"] == "cancelled"
    late = (await create(service, shipment_body())).json()
    await track(service, late["id"], "picked_up", 1)
    refused = await service.client.post(f"/shipments/{late['id']}/cancel", headers=saga)
    assert refused.status_code == 409


async def test_tracking_moves_forward_and_delivery_is_announced_once(service: Service) -> None:
    body = shipment_body()
    shipment = (await create(service, body)).json()
    for status, minute in [("picked_up", 1), ("in_transit", 2), ("delivered", 5),
                           ("in_transit", 3), ("delivered", 5)]:
        assert (await track(service, shipment["id"], status, minute)).status_code == 200
    detail = (await service.client.get(f"/shipments/{shipment['id']}",
                                       headers=service.auth("ann"))).json()
    assert detail["status"] == "delivered"
    assert [t["status"] for t in detail["tracking"]] == [
        "picked_up", "in_transit", "in_transit", "delivered"]
    assert await events(service, "shipment.delivered", body["order_id"]) == 1


async def test_someone_elses_shipment_is_not_found(service: Service) -> None:
    shipment = (await create(service, shipment_body())).json()
    response = await service.client.get(f"/shipments/{shipment['id']}",
                                        headers=service.auth("bob"))
    assert response.status_code == 404
