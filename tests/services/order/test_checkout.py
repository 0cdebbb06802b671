"""Checkout end to end through the order service, its outbox, the Redis event bus and
PostgreSQL, with in-process participants: the happy path reaches CONFIRMED, a declined card
or a failed shipment undoes every earlier step in reverse, the same Idempotency-Key makes
one order and one charge even concurrently, and a restarted service finishes what the
previous one started."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from services.core.events.tables import outbox
from services.order.models import Order, SagaRecord
from tests.services.order.conftest import (
    PRICE,
    Service,
    World,
    order_service,
    order_settings,
)
from tests.services.support import eventually, unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ADDRESS = {"name": "Ann Shopper", "line1": "1 Main St", "city": "Springfield",
           "postal_code": "12345", "country": "US"}


def checkout_body(method: str = "pm_card_visa", quantity: int = 2) -> dict[str, Any]:
    return {"lines": [{"variant_id": str(uuid.uuid4()), "quantity": quantity}],
            "currency": "usd", "payment_method": method, "shipping_address": ADDRESS}


async def place(service: Service, headers: dict[str, str], body: dict[str, Any],
                key: str | None = None) -> Any:
    return await service.client.post("/checkout", json=body, headers={
        **headers, "Idempotency-Key": key or unique("co")})


async def settled(service: Service, headers: dict[str, str], order_id: str,
                  status: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        response = await service.client.get(f"/orders/{order_id}", headers=headers)
        found.update(response.json())
        return bool(found.get("status") == status)

    await eventually(reached, within=20, what=f"order {order_id} {status}")
    return found


async def test_happy_path_reaches_confirmed_with_a_full_timeline(service: Service) -> None:
    headers = service.auth()
    response = await place(service, headers, checkout_body())
    assert response.status_code == 202, response.text
    order = response.json()
    assert order["status"] == "PENDING" and order["total"] == 2 * PRICE
    detail = await settled(service, headers, order["id"], "CONFIRMED")
    assert [t["status"] for t in detail["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "PAID", "SHIPMENT_CREATED", "CONFIRMED"]
    world = service.world
    assert world.reservations[order["id"]] == "committed"
    assert order["id"] in world.charges and world.shipments[order["id"]] == "created"
    history = (await service.client.get("/orders", headers=headers)).json()
    assert [o["id"] for o in history] == [order["id"]]


async def test_declined_card_releases_inventory_and_cancels_with_reason(
        service: Service) -> None:
    headers = service.auth()
    stock = service.world.stock
    order = (await place(service, headers,
                         checkout_body("pm_card_chargeDeclinedInsufficientFunds"))).json()
    detail = await settled(service, headers, order["id"], "CANCELLED")
    assert "insufficient funds" in detail["reason"]
    assert [t["status"] for t in detail["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "CANCELLING", "CANCELLED"]
    assert service.world.reservations[order["id"]] == "released"
    assert service.world.stock == stock
    assert order["id"] not in service.world.charges


async def test_failed_shipment_refunds_then_releases(service: Service) -> None:
    service.world.fail_shipments = True
    headers = service.auth()
    order = (await place(service, headers, checkout_body())).json()
    detail = await settled(service, headers, order["id"], "CANCELLED")
    assert detail["reason"] == "no carrier serves the address"
    assert service.world.refunds[order["id"]] == 1
    assert service.world.reservations[order["id"]] == "released"


async def test_out_of_stock_cancels_without_charging(service: Service) -> None:
    headers = service.auth()
    order = (await place(service, headers, checkout_body(quantity=5_000))).json()
    detail = await settled(service, headers, order["id"], "CANCELLED")
    assert detail["reason"] == "out of stock"
    assert (order["id"], "charge_payment") not in service.world.calls


async def test_same_key_concurrently_makes_one_order_and_one_charge(service: Service) -> None:
    headers, body = service.auth(), checkout_body()
    responses = await asyncio.gather(*(place(service, headers, body, key="one-click")
                                       for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    order_id = ids.pop()
    await settled(service, headers, order_id, "CONFIRMED")
    async with service.database.session() as session:
        orders = await session.scalar(select(func.count()).select_from(Order)
                                      .where(Order.idempotency_key == "one-click"))
        sagas = await session.scalar(select(func.count()).select_from(SagaRecord))
        orders_total = await session.scalar(select(func.count()).select_from(Order))
    assert orders == 1 and sagas == orders_total
    assert service.world.calls[(order_id, "charge_payment")] == 1
    assert len(service.world.charges) == 1


async def test_same_key_for_another_basket_is_refused(service: Service) -> None:
    headers = service.auth()
    await place(service, headers, checkout_body(), key="k")
    response = await place(service, headers, checkout_body(), key="k")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


async def test_unknown_currency_is_a_client_error(service: Service) -> None:
    body = {**checkout_body(), "currency": "eur"}
    response = await place(service, service.auth(), body)
    assert response.status_code == 422


async def test_another_shoppers_order_is_not_found(service: Service) -> None:
    order = (await place(service, service.auth("ann"), checkout_body())).json()
    response = await service.client.get(f"/orders/{order['id']}", headers=service.auth("bob"))
    assert response.status_code == 404


async def test_cancel_after_confirmation_is_refused(service: Service) -> None:
    headers = service.auth()
    order = (await place(service, headers, checkout_body())).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    response = await service.client.post(f"/orders/{order['id']}/cancel", headers=headers)
    assert response.status_code == 409


async def test_orders_total_metric_counts_statuses(service: Service) -> None:
    headers = service.auth()
    order = (await place(service, headers, checkout_body())).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    metrics = (await service.client.get("/metrics")).text
    assert 'orders_total{status="CONFIRMED"}' in metrics


async def test_a_restarted_service_finishes_every_saga(order_database_url: str,
                                                       redis_server: Any) -> None:
    """The first instance stops with commands unsent (its relay is too slow to run); the
    second, on the same schema and topics, picks them up from the outbox and finishes."""
    world = World()
    settings = order_settings(order_database_url, redis_server.url,
                              outbox_poll_interval_seconds=3600)
    order_ids: list[str] = []
    async with order_service(settings, world) as first:
        headers = first.auth("restart-shopper")
        first.app.state.runtime.relay.stop()
        for _ in range(3):
            order_ids.append((await place(first, headers, checkout_body())).json()["id"])
        async with first.database.session() as session:
            pending = await session.scalar(select(func.count()).select_from(outbox)
                                           .where(outbox.c.published_at.is_(None)))
        assert pending and pending >= 3
    resumed = settings.model_copy(update={"outbox_poll_interval_seconds": 0.05})
    async with order_service(resumed, world) as second:
        for order_id in order_ids:
            await settled(second, headers, order_id, "CONFIRMED")
    assert all(world.calls[(o, "charge_payment")] == 1 for o in order_ids)
