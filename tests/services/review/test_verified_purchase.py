"""Verified purchases from the order service's events: whichever comes first, the review or
the paid order, the review ends up verified; a cancelled order takes the flag back; a
redelivered event changes nothing; a payload that is not an order goes to the dead letters.

Events go through the real bus (Redis Streams) to the service's own consumer, as the order
service's outbox relay would publish them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import text

from services.core.auth import TokenService
from services.core.events.bus import OutgoingMessage
from services.core.events.envelope import EventEnvelope
from services.product.app import create_app as create_product_app
from services.review.app import create_app
from tests.services.fuzz import served
from tests.services.product.conftest import product_settings
from tests.services.support import eventually, running, unique

from .conftest import Service, review_settings

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WITHIN = 10.0


def order_event(owner: str, status: str, *products: uuid.UUID,
                order_id: uuid.UUID | None = None, previous: str = "INVENTORY_RESERVED"
                ) -> EventEnvelope:
    order = order_id or uuid.uuid4()
    return EventEnvelope.new("order.status_changed", source="order", key=str(order), payload={
        "order_id": str(order), "owner": owner, "status": status, "previous": previous,
        "reason": None,
        "lines": [{"product_id": str(p), "variant_id": str(uuid.uuid4()), "quantity": 1}
                  for p in products]})


async def publish(service: Service, *events: EventEnvelope) -> None:
    bus = service.app.state.runtime.require_bus()
    await bus.publish([OutgoingMessage("order.events", e.key, e.to_bytes()) for e in events])


async def verified(service: Service, review_id: str, headers: dict[str, str]) -> bool:
    response = await service.client.get(f"/reviews/{review_id}", headers=headers)
    assert response.status_code == 200, response.text
    return bool(response.json()["verified_purchase"])


async def test_a_review_written_before_the_purchase_is_verified_when_it_is_paid(
        service: Service) -> None:
    user, product = unique("buyer"), uuid.uuid4()
    headers = service.token(user)
    review = await service.review(product, headers)
    assert review["verified_purchase"] is False
    await publish(service, order_event(user, "PAID", product))

    async def flagged() -> bool:
        return await verified(service, review["id"], headers)

    await eventually(flagged, within=WITHIN, what="the verified flag")


async def test_a_review_written_after_the_purchase_is_verified_at_once(
        service: Service) -> None:
    user, product, other = unique("buyer"), uuid.uuid4(), uuid.uuid4()
    event = order_event(user, "CONFIRMED", product, other)
    await publish(service, event)
    group = service.app.state.settings.service_name

    async def recorded() -> bool:
        async with service.app.state.database.session() as session:
            row = (await session.execute(text(
                "SELECT 1 FROM processed_events WHERE consumer_group = :g AND event_id = :e"),
                {"g": group, "e": event.id})).first()
        return row is not None

    await eventually(recorded, within=WITHIN, what="the order event to be handled")
    review = await service.review(product, service.token(user))
    assert review["verified_purchase"] is True
    # Someone else's review of the same product is not verified by this order.
    assert (await service.review(product, service.shopper()))["verified_purchase"] is False


async def test_a_cancelled_order_takes_the_flag_back_for_good(service: Service) -> None:
    user, product, order = unique("buyer"), uuid.uuid4(), uuid.uuid4()
    headers = service.token(user)
    review = await service.review(product, headers)
    paid = order_event(user, "PAID", product, order_id=order)
    await publish(service, paid)

    async def flagged() -> bool:
        return await verified(service, review["id"], headers)

    await eventually(flagged, within=WITHIN, what="the verified flag")
    cancelled = order_event(user, "CANCELLED", product, order_id=order, previous="PAID")
    # The paid event again (as a redelivery with a new id would be) after the cancellation:
    # the order stays cancelled.
    late = order_event(user, "SHIPMENT_CREATED", product, order_id=order)
    await publish(service, cancelled, paid, late)

    async def withdrawn() -> bool:
        return not await verified(service, review["id"], headers)

    await eventually(withdrawn, within=WITHIN, what="the flag to be withdrawn")
    marker = order_event(user, "PAID", uuid.uuid4())
    await publish(service, marker)

    async def marker_handled() -> bool:
        async with service.app.state.database.session() as session:
            return (await session.execute(text(
                "SELECT 1 FROM review_purchases WHERE order_id = :o"),
                {"o": uuid.UUID(marker.payload["order_id"])})).first() is not None

    await eventually(marker_handled, within=WITHIN, what="a later event")
    assert not await verified(service, review["id"], headers)


async def test_another_paid_order_keeps_the_flag_when_one_is_cancelled(
        service: Service) -> None:
    user, product = unique("buyer"), uuid.uuid4()
    headers = service.token(user)
    first, second = uuid.uuid4(), uuid.uuid4()
    await publish(service, order_event(user, "PAID", product, order_id=first),
                  order_event(user, "PAID", product, order_id=second),
                  order_event(user, "CANCELLED", product, order_id=first))

    async def purchases() -> int:
        async with service.app.state.database.session() as session:
            return int((await session.execute(text(
                "SELECT count(*) FROM review_purchases WHERE user_id = :u"),
                {"u": user})).scalar_one())

    async def all_recorded() -> bool:
        return await purchases() == 2

    await eventually(all_recorded, within=WITHIN, what="both orders")
    review = await service.review(product, headers)
    assert review["verified_purchase"] is True


async def test_unpaid_statuses_and_orders_without_lines_verify_nothing(
        service: Service) -> None:
    user, product = unique("buyer"), uuid.uuid4()
    headers = service.token(user)
    pending = order_event(user, "INVENTORY_RESERVED", product)
    bare = order_event(user, "PAID")
    await publish(service, pending, bare)
    group = service.app.state.settings.service_name

    async def handled() -> bool:
        async with service.app.state.database.session() as session:
            return int((await session.execute(text(
                "SELECT count(*) FROM processed_events WHERE consumer_group = :g "
                "AND event_id IN (:a, :b)"),
                {"g": group, "a": pending.id, "b": bare.id})).scalar_one()) == 2

    await eventually(handled, within=WITHIN, what="both events")
    assert (await service.review(product, headers))["verified_purchase"] is False


@pytest.mark.parametrize("payload", [
    {"order_id": "not-a-uuid", "owner": "u", "status": "PAID"},
    {"order_id": str(uuid.uuid4()), "status": "PAID"},
    {"order_id": str(uuid.uuid4()), "owner": "u", "status": "PAID",
     "lines": [{"product_id": "nope"}]},
], ids=["bad-order-id", "no-owner", "bad-product-id"])
async def test_an_order_event_that_is_not_an_order_goes_to_the_dead_letters(
        service: Service, payload: dict[str, Any]) -> None:
    bus = service.app.state.runtime.require_bus()
    before = await bus.redis.xlen(bus.stream("order.events.dlq"))
    event = EventEnvelope.new("order.status_changed", source="order", key="k", payload=payload)
    await publish(service, event)

    async def dead_lettered() -> bool:
        return int(await bus.redis.xlen(bus.stream("order.events.dlq"))) > before

    await eventually(dead_lettered, within=WITHIN, what="the dead letter")
    # The consumer is still alive: a good event after the poison one is handled.
    user, product = unique("buyer"), uuid.uuid4()
    headers = service.token(user)
    review = await service.review(product, headers)
    await publish(service, order_event(user, "PAID", product))

    async def flagged() -> bool:
        return await verified(service, review["id"], headers)

    await eventually(flagged, within=WITHIN, what="the next event")


@asynccontextmanager
async def catalog_with_a_product(postgres_server: PostgresServer, redis_url: str
                                 ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A real product service over HTTP holding one product with one variant: order lines
    name only variants, and this is what maps them to the product a review is about.
    Yields the service's URL and the created product."""
    settings = product_settings(postgres_server.create_database("review_catalog_tests"),
                                redis_url)
    admin = {"Authorization": "Bearer " + TokenService(settings).issue_access(
        "catalog-admin", ["admin"]).token}
    with served(create_product_app(settings), "product") as product_url:
        async with httpx.AsyncClient(base_url=product_url, headers=admin) as catalog:
            slug = unique("cat").replace("_", "-")
            created = await catalog.post("/categories", json={"slug": slug, "name": "Cat"})
            assert created.status_code == 201, created.text
            response = await catalog.post("/products", json={
                "category": slug, "name": "Kettle", "variants": [
                    {"sku": unique("SKU"), "stock": 3,
                     "price": {"amount": 2500, "currency": "EUR"}}]})
            assert response.status_code == 201, response.text
        yield product_url, response.json()


async def test_order_lines_naming_only_a_variant_are_mapped_to_products_by_the_catalog(
        postgres_server: PostgresServer, redis_server: RedisServer,
        review_database_url: str) -> None:
    """Order lines carry variant ids; a real product service says whose variants they are."""
    async with catalog_with_a_product(postgres_server, redis_server.url) as (product_url,
                                                                            item):
        app = create_app(review_settings(review_database_url, redis_server.url,
                                         product_service_url=product_url))
        async with running(app) as client:
            reviews = Service(app, client)
            user = unique("buyer")
            headers = reviews.token(user)
            review = await reviews.review(uuid.UUID(item["id"]), headers)
            order = uuid.uuid4()
            event = EventEnvelope.new("order.status_changed", source="order", key=str(order),
                                      payload={"order_id": str(order), "owner": user,
                                               "status": "PAID", "lines": [
                                                   {"variant_id": item["variants"][0]["id"],
                                                    "quantity": 1},
                                                   {"variant_id": str(uuid.uuid4()),
                                                    "quantity": 1}]})
            await publish(reviews, event)

            async def flagged() -> bool:
                return await verified(reviews, review["id"], headers)

            await eventually(flagged, within=WITHIN, what="the verified flag")
