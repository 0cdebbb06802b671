"""What the order service hears from the others over the bus, and what it tells them, with
the real product, payment (Stripe backend, stripe-mock) and shipping services: a charge
that needs 3-D Secure leaves the saga waiting, and Stripe's signed webhook to the payment
service — the shopper authenticated, or failed to — moves it on or cancels it; the
carrier's delivered scan at the shipping service turns a confirmed order DELIVERED; every
status change carries the order's lines, which is how the review service learns who bought
what."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from services.core.events.envelope import EventEnvelope
from services.review.app import create_app as create_review_app
from tests.services.order.conftest import ADDRESS, RealParticipants, Service
from tests.services.order.test_checkout import checkout_body, place, settled
from tests.services.review.conftest import Service as Reviews
from tests.services.review.conftest import review_settings
from tests.services.review.test_verified_purchase import verified
from tests.services.support import eventually, running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.stripe]


async def waiting_for_the_shopper(service: Service, real: RealParticipants,
                                  headers: dict[str, str], variant: str) -> tuple[str, Any]:
    """An order whose charge needs 3-D Secure, and the PaymentIntent Stripe answered."""
    order = (await place(service, headers, checkout_body(
        "pm_card_threeDSecure2Required", variant_id=variant))).json()

    async def asked() -> bool:
        return [p[0] for p in await real.payments(order["id"])] == ["requires_action"]

    await eventually(asked, within=30, what="the charge to need 3-D Secure")
    detail = await settled(service, headers, order["id"], "INVENTORY_RESERVED")
    assert [t["status"] for t in detail["timeline"]] == ["PENDING", "INVENTORY_RESERVED"]
    [created] = real.recorder.intents_for(order["id"])
    intent = {**created.answered, "metadata": created.metadata}  # as Stripe keeps it
    assert intent["status"] == "requires_action" and intent["next_action"]
    assert intent["metadata"]["order_id"] == order["id"]
    return str(order["id"]), intent


async def test_payment_settled_after_3ds_moves_the_saga_on(service: Service,
                                                           real: RealParticipants) -> None:
    [variant] = await real.variants(stock=10)
    headers = service.auth()
    order_id, intent = await waiting_for_the_shopper(service, real, headers, variant)
    assert await real.stock(variant) == {"on_hand": 10, "reserved": 2, "available": 8}
    told = await real.webhook("payment_intent.succeeded", {
        **intent, "status": "succeeded", "next_action": None})
    assert (told.status_code, told.json()) == (200, {"outcome": "applied"}), told.text
    await settled(service, headers, order_id, "CONFIRMED")
    assert [p[0] for p in await real.payments(order_id)] == ["succeeded"]
    assert len(real.charge_keys(order_id)) == 1
    assert await real.reservation(order_id) == "committed"
    assert await real.stock(variant) == {"on_hand": 8, "reserved": 0, "available": 8}


async def test_payment_failed_after_3ds_cancels_and_releases(service: Service,
                                                             real: RealParticipants) -> None:
    [variant] = await real.variants(stock=10)
    headers = service.auth()
    order_id, intent = await waiting_for_the_shopper(service, real, headers, variant)
    told = await real.webhook("payment_intent.payment_failed", {
        **intent, "status": "requires_payment_method", "next_action": None,
        "last_payment_error": {"type": "card_error",
                               "code": "payment_intent_authentication_failure",
                               "message": "authentication failed"}})
    assert (told.status_code, told.json()) == (200, {"outcome": "applied"}), told.text
    detail = await settled(service, headers, order_id, "CANCELLED")
    assert "authentication failed" in detail["reason"]
    assert [p[0] for p in await real.payments(order_id)] == ["declined"]
    assert await real.reservation(order_id) == "released"
    assert await real.stock(variant) == {"on_hand": 10, "reserved": 0, "available": 10}


async def delivered_order(service: Service, real: RealParticipants,
                          description: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A confirmed order whose carrier then scanned it delivered: (as placed, as now)."""
    [variant] = await real.variants()
    headers = service.auth()
    order = (await place(service, headers, checkout_body(variant_id=variant))).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    await real.deliver(order["id"], description)
    return order, await settled(service, headers, order["id"], "DELIVERED")


async def test_delivery_turns_a_confirmed_order_delivered(service: Service,
                                                          real: RealParticipants) -> None:
    order, detail = await delivered_order(service, real, "left at the front door")
    assert [t["status"] for t in detail["timeline"]][-2:] == ["CONFIRMED", "DELIVERED"]
    delivered = (await status_events(service, order["id"], {"DELIVERED"}))["DELIVERED"]
    assert delivered.payload["previous"] == "CONFIRMED"
    assert delivered.payload["lines"] == [{"variant_id": line["variant_id"],
                                           "quantity": line["quantity"]}
                                          for line in order["lines"]]


async def test_the_carriers_delivery_note_is_in_the_timeline(service: Service,
                                                            real: RealParticipants) -> None:
    _, detail = await delivered_order(service, real, "left at the front door")
    assert detail["timeline"][-1]["note"] == "left at the front door"


async def status_events(service: Service, order_id: str,
                        statuses: set[str]) -> dict[str, EventEnvelope]:
    """The order's ``order.status_changed`` events by status, read as another service reads
    them: a consumer group of its own on the real bus, from the start of the topic."""
    bus = service.app.state.runtime.require_bus()
    subscription = await bus.subscribe("order.events", unique("reader"))
    found: dict[str, EventEnvelope] = {}

    async def all_read() -> bool:
        messages = await subscription.fetch(100, 0.2)
        for message in messages:
            event = EventEnvelope.from_bytes(message.value)
            if event.type == "order.status_changed" and event.key == order_id:
                found[event.payload["status"]] = event
        await subscription.ack(messages)
        return statuses <= found.keys()

    try:
        await eventually(all_read, what=f"status events {sorted(statuses)}")
    finally:
        await subscription.close()
    return found


def two_line_checkout(first: str, second: str) -> dict[str, Any]:
    return {"lines": [{"variant_id": first, "quantity": 2},
                      {"variant_id": second, "quantity": 1}],
            "currency": "usd", "payment_method": "pm_card_visa", "shipping_address": ADDRESS}


async def test_every_status_event_carries_the_orders_lines(service: Service,
                                                          real: RealParticipants) -> None:
    headers, body = service.auth(), two_line_checkout(*await real.variants(2))
    order = (await place(service, headers, body)).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    steps = ["INVENTORY_RESERVED", "PAID", "SHIPMENT_CREATED", "CONFIRMED"]
    events = await status_events(service, order["id"], set(steps))
    for previous, status in zip(["PENDING", *steps[:-1]], steps, strict=True):
        assert events[status].payload == {
            "order_id": order["id"], "owner": order["owner"], "status": status,
            "previous": previous, "reason": None, "lines": body["lines"]}


async def test_a_confirmed_order_verifies_the_shoppers_review_of_what_was_bought(
        service: Service, real: RealParticipants, postgres_server: PostgresServer,
        redis_server: RedisServer) -> None:
    """The whole path: checkout, saga, outbox, bus, the review service's consumer, the
    catalog mapping the order's variant to its product, and the shopper's review flag."""
    bought, other = await real.variants(2)
    product = uuid.UUID(await real.product_of(bought))
    reviews_app = create_review_app(review_settings(
        postgres_server.create_database("review_tests"), redis_server.url,
        event_topic_prefix=real.topic_prefix, product_service_url=real.urls["product"]))
    async with running(reviews_app) as client:
        reviews, shopper = Reviews(reviews_app, client), unique("buyer")
        review = await reviews.review(product, reviews.token(shopper))
        someone_else = reviews.shopper()
        bystander = await reviews.review(product, someone_else)
        assert review["verified_purchase"] is False
        headers = service.auth(shopper)
        order = (await place(service, headers, two_line_checkout(bought, other))).json()
        await settled(service, headers, order["id"], "CONFIRMED")

        async def flagged() -> bool:
            return await verified(reviews, review["id"], reviews.token(shopper))

        await eventually(flagged, within=20, what="the shopper's review to be verified")
        assert not await verified(reviews, bystander["id"], someone_else)
