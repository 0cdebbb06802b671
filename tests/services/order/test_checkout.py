"""Checkout end to end through the order service, its outbox, the Redis event bus and
PostgreSQL, against the real product, payment (Stripe backend, stripe-mock) and shipping
services: the happy path reaches CONFIRMED with the stock sold, one charge and a shipment;
a declined card or a shipment no carrier takes undoes every earlier step in reverse (stock
given back, the charge refunded at Stripe); the same Idempotency-Key makes one order and
one charge even concurrently; and a restarted service finishes what the previous one
started, charging each order once. What the other services did is counted at the source:
their tables and the requests stripe-mock got."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from services.core.events.tables import outbox
from services.order.app import create_app
from services.order.models import Order, SagaRecord
from tests.services.order.conftest import (
    ADDRESS,
    PRICE,
    RealParticipants,
    Service,
)
from tests.services.support import eventually, running, unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.stripe]


def checkout_body(method: str = "pm_card_visa", quantity: int = 2,
                  variant_id: str | None = None) -> dict[str, Any]:
    """A one-line checkout; without ``variant_id`` a made-up variant (for the scripted
    participants, which price any variant)."""
    return {"lines": [{"variant_id": variant_id or str(uuid.uuid4()), "quantity": quantity}],
            "currency": "usd", "payment_method": method, "shipping_address": ADDRESS}


async def place(service: Service, headers: dict[str, str], body: dict[str, Any],
                key: str | None = None) -> Any:
    return await service.client.post("/checkout", json=body, headers={
        **headers, "Idempotency-Key": key or unique("co")})


async def settled(service: Service, headers: dict[str, str], order_id: str,
                  status: str, within: float = 30) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        response = await service.client.get(f"/orders/{order_id}", headers=headers)
        found.update(response.json())
        return bool(found.get("status") == status)

    await eventually(reached, within=within, what=f"order {order_id} {status}")
    return found


async def test_happy_path_reaches_confirmed_with_a_full_timeline(
        service: Service, real: RealParticipants) -> None:
    [variant] = await real.variants(stock=10)
    headers = service.auth()
    response = await place(service, headers, checkout_body(variant_id=variant))
    assert response.status_code == 202, response.text
    order = response.json()
    assert order["status"] == "PENDING" and order["total"] == 2 * PRICE
    detail = await settled(service, headers, order["id"], "CONFIRMED")
    assert [t["status"] for t in detail["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "PAID", "SHIPMENT_CREATED", "CONFIRMED"]
    assert await real.reservation(order["id"]) == "committed"
    assert await real.stock(variant) == {"on_hand": 8, "reserved": 0, "available": 8}
    [(status, amount, refunded, intent)] = await real.payments(order["id"])
    assert (status, amount, refunded) == ("succeeded", 2 * PRICE, 0) and intent
    assert len(real.charge_keys(order["id"])) == 1
    assert [status for _, status in await real.shipments(order["id"])] == ["created"]
    history = (await service.client.get("/orders", headers=headers)).json()
    assert [o["id"] for o in history] == [order["id"]]


async def test_declined_card_releases_inventory_and_cancels_with_reason(
        service: Service, real: RealParticipants) -> None:
    [variant] = await real.variants(stock=10)
    headers = service.auth()
    order = (await place(service, headers, checkout_body(
        "pm_card_chargeDeclinedInsufficientFunds", variant_id=variant))).json()
    detail = await settled(service, headers, order["id"], "CANCELLED")
    assert "declined" in detail["reason"]
    assert [t["status"] for t in detail["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "CANCELLING", "CANCELLED"]
    assert await real.reservation(order["id"]) == "released"
    assert await real.stock(variant) == {"on_hand": 10, "reserved": 0, "available": 10}
    assert [p[0] for p in await real.payments(order["id"])] == ["declined"]
    assert await real.shipments(order["id"]) == []


async def test_failed_shipment_refunds_then_releases(service: Service,
                                                     real: RealParticipants) -> None:
    [variant] = await real.variants(stock=100)
    headers = service.auth()
    # 70 units ship as 35 kg: no carrier takes a parcel that heavy, so the shipping
    # service refuses the shipment after the charge went through.
    order = (await place(service, headers, checkout_body(quantity=70,
                                                         variant_id=variant))).json()
    detail = await settled(service, headers, order["id"], "CANCELLED")
    assert "no carrier" in detail["reason"]
    assert [t["status"] for t in detail["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "PAID", "CANCELLING", "CANCELLED"]
    [(status, amount, refunded, intent)] = await real.payments(order["id"])
    assert (status, refunded) == ("refunded", amount) and amount == 70 * PRICE
    assert intent is not None
    refunds = real.recorder.refunds_of(intent)  # asked of Stripe, once (a key per refund)
    assert len({r.idempotency_key for r in refunds}) == 1 and refunds[-1].status == 200
    assert refunds[-1].params["amount"] == str(70 * PRICE)
    assert await real.reservation(order["id"]) == "released"
    assert await real.stock(variant) == {"on_hand": 100, "reserved": 0, "available": 100}
    assert await real.shipments(order["id"]) == []


async def test_out_of_stock_cancels_without_charging(service: Service,
                                                     real: RealParticipants) -> None:
    [variant] = await real.variants(stock=10)
    headers = service.auth()
    order = (await place(service, headers, checkout_body(quantity=11,
                                                         variant_id=variant))).json()
    detail = await settled(service, headers, order["id"], "CANCELLED")
    assert [t["status"] for t in detail["timeline"]] == ["PENDING", "CANCELLED"]
    assert await real.reservation(order["id"]) is None
    assert await real.payments(order["id"]) == []
    assert real.recorder.intents_for(order["id"]) == []
    assert await real.stock(variant) == {"on_hand": 10, "reserved": 0, "available": 10}


async def test_same_key_concurrently_makes_one_order_and_one_charge(
        service: Service, real: RealParticipants) -> None:
    [variant] = await real.variants(stock=10)
    headers, body = service.auth(), checkout_body(variant_id=variant)
    key = unique("one-click")
    responses = await asyncio.gather(*(place(service, headers, body, key=key)
                                       for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    order_id = ids.pop()
    await settled(service, headers, order_id, "CONFIRMED")
    async with service.database.session() as session:
        orders = await session.scalar(select(func.count()).select_from(Order)
                                      .where(Order.idempotency_key == key))
        sagas = await session.scalar(select(func.count()).select_from(SagaRecord))
        orders_total = await session.scalar(select(func.count()).select_from(Order))
    assert orders == 1 and sagas == orders_total
    assert [p[0] for p in await real.payments(order_id)] == ["succeeded"]
    assert len(real.charge_keys(order_id)) == 1
    assert await real.stock(variant) == {"on_hand": 8, "reserved": 0, "available": 8}


async def test_same_key_for_another_basket_is_refused(service: Service,
                                                      real: RealParticipants) -> None:
    first, second = await real.variants(2)
    headers, key = service.auth(), unique("k")
    await place(service, headers, checkout_body(variant_id=first), key=key)
    response = await place(service, headers, checkout_body(variant_id=second), key=key)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


async def test_unknown_currency_is_a_client_error(service: Service,
                                                  real: RealParticipants) -> None:
    [variant] = await real.variants()
    body = {**checkout_body(variant_id=variant), "currency": "eur"}
    response = await place(service, service.auth(), body)
    assert response.status_code == 422


async def test_another_shoppers_order_is_not_found(service: Service,
                                                   real: RealParticipants) -> None:
    [variant] = await real.variants()
    order = (await place(service, service.auth(unique("ann")),
                         checkout_body(variant_id=variant))).json()
    response = await service.client.get(f"/orders/{order['id']}",
                                        headers=service.auth(unique("bob")))
    assert response.status_code == 404


async def test_cancel_after_confirmation_is_refused(service: Service,
                                                    real: RealParticipants) -> None:
    [variant] = await real.variants()
    headers = service.auth()
    order = (await place(service, headers, checkout_body(variant_id=variant))).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    response = await service.client.post(f"/orders/{order['id']}/cancel", headers=headers)
    assert response.status_code == 409
    assert await real.reservation(order["id"]) == "committed"


async def test_orders_total_metric_counts_statuses(service: Service,
                                                   real: RealParticipants) -> None:
    [variant] = await real.variants()
    headers = service.auth()
    order = (await place(service, headers, checkout_body(variant_id=variant))).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    metrics = (await service.client.get("/metrics")).text
    assert 'orders_total{status="CONFIRMED"}' in metrics


async def test_a_restarted_service_finishes_every_saga_charging_each_order_once(
        real: RealParticipants) -> None:
    """The first instance stops with commands unsent (its relay is too slow to run); the
    second, on the same schema and topics, picks them up from the outbox and finishes.
    A bus namespace of their own: the module's order service must not take their
    commands."""
    [variant] = await real.variants(stock=10)
    settings = real.order_settings(event_topic_prefix=unique("t") + ".",
                                   outbox_poll_interval_seconds=3600)
    order_ids: list[str] = []
    app = create_app(settings)
    async with running(app) as client:
        first = Service(app, client)
        headers = first.auth("restart-shopper")
        first.app.state.runtime.relay.stop()
        for _ in range(3):
            order_ids.append((await place(first, headers, checkout_body(
                quantity=1, variant_id=variant))).json()["id"])
        async with first.database.session() as session:
            pending = await session.scalar(select(func.count()).select_from(outbox)
                                           .where(outbox.c.published_at.is_(None)))
        assert pending and pending >= 3
    resumed = settings.model_copy(update={"outbox_poll_interval_seconds": 0.05})
    app = create_app(resumed)
    async with running(app) as client:
        second = Service(app, client)
        for order_id in order_ids:
            await settled(second, headers, order_id, "CONFIRMED")
    for order_id in order_ids:
        assert [p[0] for p in await real.payments(order_id)] == ["succeeded"]
        assert len(real.charge_keys(order_id)) == 1
        assert await real.reservation(order_id) == "committed"
    assert await real.stock(variant) == {"on_hand": 7, "reserved": 0, "available": 7}
