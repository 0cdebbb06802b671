"""The index follows the catalog's events, and a rebuild never fails a query."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kommerce.testbed.redis import RedisServer
from services.core.events.bus import OutgoingMessage
from services.core.events.envelope import EventEnvelope
from tests.services.support import eventually

from .conftest import ENGINES, Service, product, search_service

#: The bound a product change must reach search within (consumer poll + engine refresh).
SYNC_WITHIN_SECONDS = 10.0


@pytest.fixture(scope="module", params=ENGINES)
async def service(request: pytest.FixtureRequest, search_database_url: str,
                  redis_server: RedisServer) -> AsyncIterator[Service]:
    async with search_service(request, request.param, search_database_url,
                              redis_server.url) as running_service:
        yield running_service


async def publish(service: Service, event_type: str, key: str,
                  payload: dict[str, Any]) -> EventEnvelope:
    envelope = EventEnvelope.new(event_type, source="product", key=key, payload=payload)
    bus = service.app.state.runtime.require_bus()
    await bus.publish([OutgoingMessage("product.events", key, envelope.to_bytes())])
    return envelope


async def hits_for(service: Service, q: str) -> list[dict[str, Any]]:
    return (await service.search(q=q))["items"]


async def test_product_events_reach_search_within_a_bounded_time(service: Service) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    item = product(f"Kettle {word}", "kitchen", brand="Boil", price=3000)
    await publish(service, "product.created", item["id"], item)

    async def found() -> bool:
        return len(await hits_for(service, word)) == 1

    await eventually(found, within=SYNC_WITHIN_SECONDS, what="the created product")

    variant = item["variants"][0]
    await publish(service, "price.changed", item["id"], {
        "product_id": item["id"], "variant_id": variant["id"], "sku": variant["sku"],
        "old": variant["price"], "new": {"amount": 2500, "currency": "EUR"}})

    async def repriced() -> bool:
        hits = await hits_for(service, word)
        return bool(hits) and hits[0]["price_min"] == 2500

    await eventually(repriced, within=SYNC_WITHIN_SECONDS, what="the new price")

    await publish(service, "stock.changed", item["id"], {
        "product_id": item["id"], "variant_id": variant["id"], "sku": variant["sku"],
        "on_hand": 0, "reserved": 0, "available": 0})

    async def sold_out() -> bool:
        hits = await hits_for(service, word)
        return bool(hits) and hits[0]["in_stock"] is False

    await eventually(sold_out, within=SYNC_WITHIN_SECONDS, what="the stock change")

    renamed = {**item, "name": f"Tea Kettle {word}", "version": 2}
    await publish(service, "product.updated", item["id"], renamed)

    async def updated() -> bool:
        hits = await hits_for(service, word)
        return bool(hits) and hits[0]["name"].startswith("Tea")

    await eventually(updated, within=SYNC_WITHIN_SECONDS, what="the update")

    await publish(service, "product.deleted", item["id"],
                  {"id": item["id"], "category": "kitchen", "version": 3})

    async def gone() -> bool:
        return await hits_for(service, word) == []

    await eventually(gone, within=SYNC_WITHIN_SECONDS, what="the deletion")


async def test_stale_and_repeated_events_change_nothing(service: Service) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    current = product(f"Lamp {word}", "home", version=5)
    indexer = service.indexer
    async with indexer.database.session() as session, session.begin():
        await indexer.product_changed(session, current)
        await indexer.product_changed(session, {**current, "name": f"Old {word}",
                                                "version": 4})
        await indexer.product_changed(session, {**current, "name": f"Again {word}",
                                                "version": 5})
    await indexer.backend.refresh()
    assert [h["name"] for h in await hits_for(service, word)] == [f"Lamp {word}"]

    # A late update after the delete does not resurrect the product.
    async with indexer.database.session() as session, session.begin():
        await indexer.product_deleted(session, {"id": current["id"], "version": 6,
                                                "category": "home"})
        await indexer.product_changed(session, {**current, "version": 5})
    await indexer.backend.refresh()
    assert await hits_for(service, word) == []


async def test_an_event_that_is_not_a_product_goes_to_the_dead_letters(
        service: Service) -> None:
    await publish(service, "product.created", "broken", {"id": "not-a-uuid"})
    bus = service.app.state.runtime.require_bus()
    group = service.app.state.settings.service_name

    async def dead_lettered() -> bool:
        length = await bus.redis.xlen(bus.stream("product.events.dlq"))
        return bool(length)

    await eventually(dead_lettered, within=SYNC_WITHIN_SECONDS, what="the dead letter")
    assert group == "search"


async def test_rebuilding_while_queries_run_fails_no_query(service: Service) -> None:
    """Searches run back to back while the index is rebuilt and switched; every one
    succeeds and sees the whole catalog (the alias is never empty or half-built)."""
    word = f"zq{uuid.uuid4().hex[:8]}"
    items = [product(f"Chair {word} {i}", "furniture", price=1000 + i) for i in range(60)]
    await service.apply(*items)
    stop = asyncio.Event()
    totals: list[int] = []
    failures: list[str] = []

    async def query_loop() -> None:
        while not stop.is_set():
            response = await service.client.get("/search", params={"q": word, "size": 1})
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:200]}")
            else:
                totals.append(response.json()["total"])

    loops = [asyncio.create_task(query_loop()) for _ in range(3)]
    try:
        admin = service.token("ops", "admin")
        rebuild = asyncio.create_task(service.client.post("/search/rebuild", headers=admin))
        await asyncio.sleep(0.05)
        # A change that arrives while the new index is being built is not lost in it.
        await service.apply(product(f"Late {word}", "furniture", price=999))
        response = await rebuild
        assert response.status_code == 200, response.text
        assert response.json()["documents"] >= 60
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert failures == []
    assert len(totals) > 5 and set(totals) <= {60, 61}
    await service.indexer.backend.refresh()
    assert (await service.search(q=word))["total"] == 61
