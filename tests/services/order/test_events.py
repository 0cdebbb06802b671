"""What the order service hears from the others over the bus, and what it tells them: a
payment settled later (after 3-D Secure, through Stripe's webhook and the payment service)
moves the waiting saga on, a late decline cancels it, a delivery turns a confirmed order
DELIVERED; every status change carries the order's lines, which is how the review service
learns who bought what."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from services.core.events.bus import OutgoingMessage
from services.core.events.envelope import EventEnvelope
from services.review.app import create_app as create_review_app
from tests.services.order.conftest import Service, World, order_service, order_settings
from tests.services.order.test_checkout import ADDRESS, checkout_body, place, settled
from tests.services.review.conftest import Service as Reviews
from tests.services.review.conftest import review_settings
from tests.services.review.test_verified_purchase import catalog_with_a_product, verified
from tests.services.support import eventually, running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def publish(service: Service, topic: str, event_type: str, source: str,
                  payload: dict[str, Any]) -> None:
    envelope = EventEnvelope.new(event_type, source=source, key=payload["order_id"],
                                 payload=payload)
    await service.app.state.runtime.require_bus().publish(
        [OutgoingMessage(topic, envelope.key, envelope.to_bytes())])


async def waiting_for_the_shopper(service: Service, headers: dict[str, str]) -> str:
    order = (await place(service, headers,
                         checkout_body("pm_card_authenticationRequired"))).json()

    async def asked() -> bool:
        return (order["id"], "charge_payment") in service.world.calls

    await eventually(asked, what="the charge to be attempted")
    detail = await settled(service, headers, order["id"], "INVENTORY_RESERVED")
    assert detail["status"] == "INVENTORY_RESERVED"
    return str(order["id"])


async def test_payment_settled_after_3ds_moves_the_saga_on(service: Service) -> None:
    headers = service.auth()
    order_id = await waiting_for_the_shopper(service, headers)
    await publish(service, "payment.events", "payment.succeeded", "payment",
                  {"order_id": order_id, "payment_id": "pay-1", "status": "succeeded"})
    await settled(service, headers, order_id, "CONFIRMED")


async def test_payment_failed_after_3ds_cancels_and_releases(service: Service) -> None:
    headers = service.auth()
    order_id = await waiting_for_the_shopper(service, headers)
    await publish(service, "payment.events", "payment.failed", "payment",
                  {"order_id": order_id, "failure_message": "authentication failed"})
    detail = await settled(service, headers, order_id, "CANCELLED")
    assert "authentication failed" in detail["reason"]
    assert service.world.reservations[order_id] == "released"


async def test_delivery_turns_a_confirmed_order_delivered(service: Service) -> None:
    headers = service.auth()
    order = (await place(service, headers, checkout_body())).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    await publish(service, "shipping.events", "shipment.delivered", "shipping",
                  {"order_id": order["id"], "description": "left at the front door"})
    detail = await settled(service, headers, order["id"], "DELIVERED")
    assert detail["timeline"][-1] == {**detail["timeline"][-1], "status": "DELIVERED",
                                      "note": "left at the front door"}
    delivered = (await status_events(service, order["id"], {"DELIVERED"}))["DELIVERED"]
    assert delivered.payload["previous"] == "CONFIRMED"
    assert delivered.payload["lines"] == [{"variant_id": line["variant_id"],
                                           "quantity": line["quantity"]}
                                          for line in order["lines"]]


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


def two_line_checkout(variant_id: str | None = None) -> dict[str, Any]:
    return {"lines": [{"variant_id": variant_id or str(uuid.uuid4()), "quantity": 2},
                      {"variant_id": str(uuid.uuid4()), "quantity": 1}],
            "currency": "usd", "payment_method": "pm_card_visa", "shipping_address": ADDRESS}


async def test_every_status_event_carries_the_orders_lines(service: Service) -> None:
    headers, body = service.auth(), two_line_checkout()
    order = (await place(service, headers, body)).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    steps = ["INVENTORY_RESERVED", "PAID", "SHIPMENT_CREATED", "CONFIRMED"]
    events = await status_events(service, order["id"], set(steps))
    for previous, status in zip(["PENDING", *steps[:-1]], steps, strict=True):
        assert events[status].payload == {
            "order_id": order["id"], "owner": order["owner"], "status": status,
            "previous": previous, "reason": None, "lines": body["lines"]}


async def test_a_confirmed_order_verifies_the_shoppers_review_of_what_was_bought(
        order_database_url: str, postgres_server: PostgresServer,
        redis_server: RedisServer) -> None:
    """The whole path: checkout, saga, outbox, bus, the review service's consumer, the
    catalog mapping the order's variant to its product, and the shopper's review flag."""
    topics = unique("t") + "."  # one bus namespace for both services
    async with catalog_with_a_product(postgres_server, redis_server.url) as (catalog, item):
        reviews_app = create_review_app(review_settings(
            postgres_server.create_database("review_tests"), redis_server.url,
            event_topic_prefix=topics, product_service_url=catalog))
        orders_settings = order_settings(order_database_url, redis_server.url,
                                         event_topic_prefix=topics)
        async with running(reviews_app) as client, \
                order_service(orders_settings, World()) as orders:
            reviews, shopper = Reviews(reviews_app, client), unique("buyer")
            product = uuid.UUID(item["id"])
            review = await reviews.review(product, reviews.token(shopper))
            someone_else = reviews.shopper()
            bystander = await reviews.review(product, someone_else)
            assert review["verified_purchase"] is False
            headers = orders.auth(shopper)
            order = (await place(orders, headers,
                                 two_line_checkout(item["variants"][0]["id"]))).json()
            await settled(orders, headers, order["id"], "CONFIRMED")

            async def flagged() -> bool:
                return await verified(reviews, review["id"], reviews.token(shopper))

            await eventually(flagged, within=20, what="the shopper's review to be verified")
            assert not await verified(reviews, bystander["id"], someone_else)
