"""Routing by the shard map across three shard databases, and hot reload of the map."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from kommerce.testbed.redis import RedisServer
from services.core.db import Database, create_engine
from services.product.app import create_app
from tests.services.support import eventually, running

from .conftest import ProductService, product_settings, variant

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MapWriter = Callable[..., dict[str, Any]]


def shard_map(urls: list[str], version: str, **placements: list[str]) -> dict[str, Any]:
    """Three shards; ``placements`` maps shard names (shard_1 …) to their categories."""
    shards = []
    categories: dict[str, str] = {}
    for i, url in enumerate(urls, start=1):
        name = f"shard-{i}"
        owned = placements.get(f"shard_{i}", [])
        shards.append({"name": name, "dsn": url, "categories": owned})
        categories.update(dict.fromkeys(owned, name))
    return {"format": 1, "layout": "catalog", "version": version, "defaultShard": "shard-1",
            "unlistedCategories": "DefaultShard", "shards": shards, "categories": categories}


FIRST_MAP = {"shard_1": ["electronics", "computers"], "shard_2": ["clothing", "shoes"],
             "shard_3": ["home", "garden"]}


@pytest.fixture
async def sharded(product_database_url: str, shard_database_urls: list[str],
                  redis_server: RedisServer, redis: Any,
                  tmp_path: Path) -> AsyncIterator[tuple[ProductService, MapWriter]]:
    map_file = tmp_path / "shard-map.json"

    def write_map(version: str, shard_count: int = 3, **placements: list[str]) -> dict[str, Any]:
        document = shard_map(shard_database_urls[:shard_count], version, **placements)
        staged = tmp_path / "staged.json"
        staged.write_bytes(orjson.dumps(document))
        staged.replace(map_file)  # atomic, as a ConfigMap update is
        return document

    write_map("v1", **FIRST_MAP)
    settings = product_settings(product_database_url, redis_server.url,
                                shard_map_path=map_file)
    app = create_app(settings)
    async with running(app) as client:
        yield ProductService(app, client, settings, redis), write_map


async def shard_of(service: ProductService, urls: list[str], product_id: str) -> list[int]:
    """Which shard databases (1-based) hold the product's row."""
    holders = []
    for i, url in enumerate(urls, start=1):
        database = Database(create_engine(url, service.settings.schema_name, pool_size=1),
                            service.settings.schema_name)
        try:
            async with database.session() as session:
                found = await session.scalar(text("SELECT count(*) FROM products WHERE id = :id"),
                                             {"id": uuid.UUID(product_id)})
        finally:
            await database.dispose()
        if found:
            holders.append(i)
    return holders


async def test_products_live_in_their_categorys_shard_and_listings_merge(
    sharded: tuple[ProductService, MapWriter], shard_database_urls: list[str],
) -> None:
    service, _ = sharded
    for category in ("electronics", "shoes", "garden", "toys"):
        await service.category(category)
    laptop = await service.product("electronics", "Laptop", variants=[variant(amount=100000)])
    boots = await service.product("shoes", "Boots", variants=[variant(amount=12000)])
    hose = await service.product("garden", "Hose", variants=[variant(amount=3000)])
    kite = await service.product("toys", "Kite", variants=[variant(amount=2000)])

    assert await shard_of(service, shard_database_urls, laptop["id"]) == [1]
    assert await shard_of(service, shard_database_urls, boots["id"]) == [2]
    assert await shard_of(service, shard_database_urls, hose["id"]) == [3]
    assert await shard_of(service, shard_database_urls, kite["id"]) == [1]  # the default shard
    for product in (laptop, boots, hose, kite):
        assert (await service.client.get(f"/products/{product['id']}")).json() == product

    everything = (await service.client.get("/products", params={"sort": "price_asc"})).json()
    assert [p["name"] for p in everything["items"]] == ["Kite", "Hose", "Boots", "Laptop"]
    two = (await service.client.get("/products", params={
        "category": ["shoes", "garden"], "sort": "name"})).json()
    assert [p["name"] for p in two["items"]] == ["Boots", "Hose"]
    page = (await service.client.get("/products", params={"limit": 3})).json()
    rest = (await service.client.get("/products", params={"limit": 3,
                                                          "cursor": page["next_cursor"]})).json()
    assert [p["name"] for p in page["items"] + rest["items"]] == [
        "Kite", "Hose", "Boots", "Laptop"]
    assert rest["next_cursor"] is None
    categories = {c["slug"]: c["shard"] for c in (await service.client.get("/categories")).json()}
    assert categories == {"electronics": "shard-1", "garden": "shard-3", "shoes": "shard-2",
                          "toys": "shard-1"}


async def test_a_reloaded_map_moves_where_new_queries_go(
    sharded: tuple[ProductService, MapWriter], shard_database_urls: list[str],
) -> None:
    service, write_map = sharded
    await service.category("toys")
    before = await service.product("toys", "Yo-yo")

    write_map("v2", **{**FIRST_MAP, "shard_3": ["home", "garden", "toys"]})

    async def reloaded() -> bool:
        return bool(service.app.state.runtime.shard_map.value.version == "v2")

    await eventually(reloaded, what="the new shard map to take effect")
    after = await service.product("toys", "Kite")
    listed = (await service.client.get("/products", params={"category": "toys"})).json()

    assert await shard_of(service, shard_database_urls, before["id"]) == [1]
    assert await shard_of(service, shard_database_urls, after["id"]) == [3]
    assert [p["name"] for p in listed["items"]] == ["Kite"]
    assert (await service.client.get("/categories/toys")).json()["shard"] == "shard-3"
    # A product left behind on its old shard (the operator has not moved it yet) is still
    # found by id.
    assert (await service.client.get(f"/products/{before['id']}")).status_code == 200


async def test_a_map_that_fails_validation_leaves_the_old_one_in_force(
    sharded: tuple[ProductService, MapWriter],
) -> None:
    service, _ = sharded
    map_file = service.settings.shard_map_path
    assert map_file is not None
    bad = shard_map([], "v9")  # no shards at all
    map_file.write_bytes(orjson.dumps(bad))
    watcher = service.app.state.runtime.shard_map

    async def refused() -> bool:
        return watcher.last_error is not None

    await eventually(refused, what="the bad map to be refused")
    await service.category("computers")
    created = await service.product("computers")

    assert watcher.value.version == "v1"
    assert created["category"] == "computers"


async def test_a_reservation_across_shards_is_all_or_nothing(
    sharded: tuple[ProductService, MapWriter],
) -> None:
    service = sharded[0]
    await service.category("computers")
    await service.category("clothing")
    laptop = (await service.product("computers", variants=[variant(stock=5)]))["variants"][0]
    shirt = (await service.product("clothing", variants=[variant(stock=1)]))["variants"][0]

    short = await service.reserve([(laptop["id"], 2), (shirt["id"], 2)])
    reserved = await service.reserve([(laptop["id"], 2), (shirt["id"], 1)])
    committed = await service.client.post(
        f"/inventory/reservations/{reserved.json()['id']}/commit", headers=service.checkout)

    assert short.status_code == 409
    assert short.json()["details"][0]["sku"] == shirt["sku"]
    assert reserved.status_code == 201
    assert committed.json()["status"] == "committed"
    assert sorted(line["sku"] for line in committed.json()["lines"]) == sorted(
        [laptop["sku"], shirt["sku"]])

    async def stock(variant_id: str, product_of: dict[str, Any]) -> dict[str, int]:
        document = (await service.client.get(f"/products/{product_of['id']}")).json()
        return next(v["stock"] for v in document["variants"] if v["id"] == variant_id)

    laptop_product = await find_product(service, laptop["id"])
    shirt_product = await find_product(service, shirt["id"])
    assert await stock(laptop["id"], laptop_product) == {"on_hand": 3, "reserved": 0,
                                                         "available": 3}
    assert await stock(shirt["id"], shirt_product) == {"on_hand": 0, "reserved": 0,
                                                       "available": 0}


async def find_product(service: ProductService, variant_id: str) -> dict[str, Any]:
    page = (await service.client.get("/products")).json()
    return next(p for p in page["items"] if any(v["id"] == variant_id for v in p["variants"]))


async def test_moving_a_product_to_a_category_on_another_shard_moves_its_rows(
    sharded: tuple[ProductService, MapWriter], shard_database_urls: list[str],
) -> None:
    service = sharded[0]
    await service.category("electronics")
    await service.category("home")
    lamp = await service.product("electronics", "Lamp", variants=[variant("LAMP-1", stock=2)])

    moved = await service.client.patch(f"/products/{lamp['id']}", headers=service.admin,
                                       json={"category": "home"})

    assert moved.status_code == 200
    assert moved.json()["variants"][0]["sku"] == "LAMP-1"
    assert moved.json()["version"] == 2
    assert await shard_of(service, shard_database_urls, lamp["id"]) == [3]
    assert (await service.reserve([(lamp["variants"][0]["id"], 2)])).status_code == 201


async def test_skus_are_unique_across_shards(sharded: tuple[ProductService, MapWriter]) -> None:
    service = sharded[0]
    await service.category("shoes")
    await service.category("garden")
    await service.product("shoes", variants=[variant("SHARED-1")])

    clash = await service.client.post("/products", headers=service.admin, json={
        "category": "garden", "name": "X", "variants": [variant("SHARED-1")]})

    assert clash.status_code == 409
    assert clash.json()["code"] == "sku_taken"


async def test_events_of_every_shard_reach_the_bus(
    sharded: tuple[ProductService, MapWriter],
) -> None:
    service = sharded[0]
    for category in ("computers", "clothing", "garden"):
        await service.category(category)
        await service.product(category, f"In {category}")
    stream = service.settings.event_topic_prefix + "product.events"

    async def all_three() -> bool:
        entries = await service.redis.xrange(stream)
        types = [orjson.loads(fields[b"value"])["type"] for _, fields in entries]
        return types.count("product.created") == 3

    await eventually(all_three, what="every shard's outbox to be relayed")


async def test_ready_checks_every_shard(sharded: tuple[ProductService, MapWriter]) -> None:
    ready = await sharded[0].client.get("/ready")

    assert ready.status_code == 200
    assert ready.json()["checks"]["shards"]["status"] == "ok"


async def test_a_shard_dropped_from_the_map_is_retired_and_its_categories_rerouted(
    sharded: tuple[ProductService, MapWriter], shard_database_urls: list[str],
) -> None:
    service, write_map = sharded
    await service.category("garden")
    shards = service.app.state.shards
    assert shards.open_shards == ["shard-1", "shard-2", "shard-3"]

    write_map("v2", shard_count=2, shard_1=["electronics", "computers"],
              shard_2=["clothing", "shoes", "home", "garden"])

    async def retired() -> bool:
        return shards.open_shards == ["shard-1", "shard-2"] and shards.retiring == 0

    await eventually(retired, what="shard-3 to leave the map")
    hose = await service.product("garden", "Hose")

    assert await shard_of(service, shard_database_urls, hose["id"]) == [2]
    assert (await service.client.get("/ready")).status_code == 200
