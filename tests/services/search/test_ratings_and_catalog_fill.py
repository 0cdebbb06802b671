"""Ratings from the review service reach search (shown, sortable); an empty store is filled
from a real product service at start-up; very large result sets are bounded the same way on
both engines. Every test runs against PostgreSQL and the real Elasticsearch node."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from elasticsearch import AsyncElasticsearch
from sqlalchemy import text

from services.core.auth import TokenService
from services.core.events.bus import OutgoingMessage
from services.core.events.envelope import EventEnvelope
from services.product.app import create_app as create_product_app
from services.search import elastic, postgres
from tests.services.fuzz import served
from tests.services.product.conftest import product_settings
from tests.services.support import eventually, unique

from .conftest import ENGINES, Service, product, search_service

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

WITHIN = 10.0


@pytest.fixture(scope="module", params=ENGINES)
async def service(request: pytest.FixtureRequest, search_database_url: str,
                  redis_server: RedisServer) -> AsyncIterator[Service]:
    async with search_service(request, request.param, search_database_url,
                              redis_server.url) as running_service:
        yield running_service


async def rate(service: Service, product_id: str, average: float | None, count: int,
               payload: dict[str, Any] | None = None) -> EventEnvelope:
    """Publish ``rating.changed`` on the review service's topic, as its outbox would."""
    envelope = EventEnvelope.new("rating.changed", source="review", key=product_id,
                                 payload=payload if payload is not None else {
                                     "product_id": product_id, "count": count,
                                     "average": average, "distribution": {}})
    bus = service.app.state.runtime.require_bus()
    await bus.publish([OutgoingMessage("review.events", product_id, envelope.to_bytes())])
    return envelope


async def handled(service: Service, event: EventEnvelope) -> bool:
    async with service.indexer.database.session() as session:
        return (await session.execute(text(
            "SELECT 1 FROM processed_events WHERE event_id = :e"), {"e": event.id})
        ).first() is not None


async def test_ratings_are_shown_and_rank_the_rating_sort(service: Service) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    fair, best, unrated = (product(f"{label} {word}", "kitchen") for label in
                           ("Fair", "Best", "Unrated"))
    await service.apply(fair, best, unrated)
    await rate(service, fair["id"], 3.5, 2)
    await rate(service, best["id"], 4.8, 10)

    async def ranked() -> bool:
        items = (await service.search(q=word, sort="rating"))["items"]
        return [(i["name"].split()[0], i["rating"], i["rating_count"]) for i in items] == [
            ("Best", 4.8, 10), ("Fair", 3.5, 2), ("Unrated", None, 0)]

    await eventually(ranked, within=WITHIN, what="the ratings in search")


async def test_a_rating_that_arrives_before_its_product_is_kept(service: Service) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    item = product(f"Teapot {word}", "kitchen")
    event = await rate(service, item["id"], 4.0, 1)
    await eventually(lambda: handled(service, event), within=WITHIN, what="the rating")
    await service.apply(item)
    assert (await service.search(q=word))["items"][0]["rating"] == 4.0


async def test_an_older_rating_summary_never_replaces_a_newer_one(service: Service) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    item = product(f"Ladle {word}", "kitchen")
    await service.apply(item)
    now = datetime.now(UTC)
    indexer = service.indexer
    async with indexer.database.session() as session, session.begin():
        await indexer.rating_changed(session, {"product_id": item["id"], "count": 5,
                                               "average": 4.2}, now)
        await indexer.rating_changed(session, {"product_id": item["id"], "count": 4,
                                               "average": 2.0}, now - timedelta(seconds=5))
    await indexer.backend.refresh()
    hit = (await service.search(q=word))["items"][0]
    assert (hit["rating"], hit["rating_count"]) == (4.2, 5)


@pytest.mark.parametrize("payload", [
    {"product_id": "not-a-uuid", "count": 1, "average": 4.0},
    {"product_id": str(uuid.uuid4()), "count": 1, "average": 9.5},
    {"product_id": str(uuid.uuid4())},
], ids=["bad-id", "out-of-range", "no-count"])
async def test_a_rating_event_that_is_not_a_summary_goes_to_the_dead_letters(
        service: Service, payload: dict[str, Any]) -> None:
    bus = service.app.state.runtime.require_bus()
    before = int(await bus.redis.xlen(bus.stream("review.events.dlq")))
    await rate(service, str(uuid.uuid4()), None, 0, payload=payload)

    async def dead_lettered() -> bool:
        return int(await bus.redis.xlen(bus.stream("review.events.dlq"))) > before

    await eventually(dead_lettered, within=WITHIN, what="the dead letter")
    # The consumer carries on with the next event.
    word = f"zq{uuid.uuid4().hex[:8]}"
    item = product(f"Whisk {word}", "kitchen")
    await service.apply(item)
    await rate(service, item["id"], 5.0, 1)

    async def rated() -> bool:
        return (await service.search(q=word))["items"][0]["rating"] == 5.0

    await eventually(rated, within=WITHIN, what="the next rating")


async def test_a_large_result_set_is_ranked_and_faceted_from_its_best_matches(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the candidate window at 3: two products with the word in the name and four with
    it only in the description; the page is the two strong ones, and total and facets say
    they cover the best three, not all six."""
    for engine in (postgres, elastic):
        monkeypatch.setattr(engine, "FACET_CANDIDATES", 3)
    word = f"zq{uuid.uuid4().hex[:8]}"
    strong = [product(f"Strong {word} {i}", "tools") for i in range(2)]
    weak = [product(f"Weak {i}", "garden", description=f"mentions {word}") for i in range(4)]
    await service.apply(*weak, *strong)
    page = await service.search(q=word, size=2)
    assert {i["name"] for i in page["items"]} == {f"Strong {word} 0", f"Strong {word} 1"}
    assert (page["total"], page["total_relation"], page["facets_exact"]) == (3, "gte", False)
    assert sum(f["count"] for f in page["facets"]["category"]) == 3
    everything = await service.search(q=word, size=20)
    assert (everything["total"], everything["total_relation"],
            everything["facets_exact"]) == (6, "eq", True)
    assert {f["value"]: f["count"] for f in everything["facets"]["category"]} == {
        "garden": 4, "tools": 2}


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_empty_store_is_filled_from_the_product_service_at_start_up(
        request: pytest.FixtureRequest, engine: str, postgres_server: PostgresServer,
        redis_server: RedisServer, search_database_url: str) -> None:
    settings = product_settings(postgres_server.create_database("search_catalog_tests"),
                                redis_server.url)
    admin = {"Authorization": "Bearer " + TokenService(settings).issue_access(
        "catalog-admin", ["admin"]).token}
    word = f"zq{uuid.uuid4().hex[:8]}"
    with served(create_product_app(settings), "product") as product_url:
        async with httpx.AsyncClient(base_url=product_url, headers=admin) as catalog:
            slug = unique("cat").replace("_", "-")
            created = await catalog.post("/categories", json={"slug": slug, "name": "Cat"})
            assert created.status_code == 201, created.text
            for i, price in enumerate((1500, 2500, 3500)):
                response = await catalog.post("/products", json={
                    "category": slug, "name": f"Kettle {word} {i}",
                    "attributes": {"brand": "Boil"},
                    "variants": [{"sku": unique("SKU"), "stock": 3,
                                  "price": {"amount": price, "currency": "EUR"}}]})
                assert response.status_code == 201, response.text
        async with search_service(request, engine, search_database_url, redis_server.url,
                                  product_service_url=product_url) as search:

            async def filled() -> bool:
                page = await search.search(q=word, sort="price_asc")
                return [i["price_min"] for i in page["items"]] == [1500, 2500, 3500]

            await eventually(filled, within=30, what="the catalog in search")
            page = await search.search(q=word)
            assert {f["value"] for f in page["facets"]["brand"]} == {"Boil"}


@pytest.mark.elasticsearch
@pytest.mark.postgres
@pytest.mark.redis
async def test_an_empty_index_is_rebuilt_from_the_store_at_start_up(
        request: pytest.FixtureRequest, redis_server: RedisServer,
        search_database_url: str) -> None:
    """A store that outlived its index (a new cluster, a new alias): start-up rebuilds the
    index from the store, with no product service needed."""
    schema, word = unique("search"), f"zq{uuid.uuid4().hex[:8]}"
    async with search_service(request, "postgres", search_database_url, redis_server.url,
                              database_schema=schema) as first:
        await first.apply(product(f"Lantern {word}", "garden"))
    async with search_service(request, "elasticsearch", search_database_url,
                              redis_server.url, database_schema=schema) as second:

        async def rebuilt() -> bool:
            return (await second.search(q=word))["total"] == 1

        await eventually(rebuilt, within=30, what="the rebuilt index")


@pytest.mark.elasticsearch
@pytest.mark.postgres
@pytest.mark.redis
async def test_an_index_built_with_an_older_mapping_is_rebuilt_at_start_up(
        request: pytest.FixtureRequest, redis_server: RedisServer,
        search_database_url: str) -> None:
    """An index from before the current mapping (nested attributes, no ratings) keeps
    taking writes and is replaced by a rebuild from the store; filters work afterwards."""
    schema, word = unique("search"), f"zq{uuid.uuid4().hex[:8]}"
    alias = unique("products").lower()
    async with search_service(request, "postgres", search_database_url, redis_server.url,
                              database_schema=schema) as first:
        await first.apply(product(f"Lantern {word}", "garden", colors=("red",)))
    url = request.getfixturevalue("search_engine").url
    old = AsyncElasticsearch(url)
    properties = {k: v for k, v in elastic.MAPPING["properties"].items()
                  if k not in ("attribute_pairs", "rating", "rating_count")}
    properties["attributes"] = {"type": "nested", "properties": {
        "name": {"type": "keyword"}, "value": {"type": "keyword"}}}
    await old.indices.create(index=f"{alias}-old", settings=elastic.SETTINGS, mappings={
        "dynamic": "strict", "_meta": {"mapping_version": 1}, "properties": properties},
        aliases={alias: {"is_write_index": True}})
    await old.close()
    async with search_service(request, "elasticsearch", search_database_url,
                              redis_server.url, database_schema=schema,
                              search_index_alias=alias) as second:

        async def rebuilt() -> bool:
            page = await second.search(q=word, attr="color:red")
            return page["total"] == 1

        await eventually(rebuilt, within=30, what="the rebuilt index")
        await second.apply(product(f"Lamp {word}", "garden", colors=("blue",)))
        assert (await second.search(q=word))["total"] == 2
