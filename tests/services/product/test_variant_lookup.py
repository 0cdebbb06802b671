"""``GET /variants/{id}``: a variant priced by its id alone, as carts and checkouts need."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from kommerce.testbed.redis import RedisServer
from services.product.app import create_app
from tests.services.support import running

from .conftest import ProductService, product_settings, variant
from .test_shards import FIRST_MAP, shard_map

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_a_variant_is_found_by_id_with_its_price_and_product(
        product_service: ProductService) -> None:
    await product_service.category("shoes")
    product = await product_service.product("shoes", "Runner", variants=[
        variant(amount=4999, currency="USD", stock=7, name="42")])
    variant_id = product["variants"][0]["id"]

    response = await product_service.client.get(f"/variants/{variant_id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == variant_id
    assert body["product_id"] == product["id"]
    assert body["product_name"] == "Runner"
    assert body["category"] == "shoes"
    assert body["price"] == {"amount": 4999, "currency": "USD"}
    assert body["stock"] == {"on_hand": 7, "reserved": 0, "available": 7}


async def test_an_unknown_variant_is_not_found(product_service: ProductService) -> None:
    response = await product_service.client.get(f"/variants/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["code"] == "variant_not_found"


async def test_a_new_price_is_seen_at_once(product_service: ProductService) -> None:
    """Checkout re-validates a cart against this answer, so it must not lag a price change
    (the product read path is cached; this one is not)."""
    await product_service.category("home")
    product = await product_service.product("home", variants=[variant(amount=1000)])
    variant_id = product["variants"][0]["id"]
    assert (await product_service.client.get(f"/variants/{variant_id}")).json()[
        "price"]["amount"] == 1000
    changed = await product_service.client.put(
        f"/products/{product['id']}/variants/{variant_id}/price",
        headers=product_service.admin, json={"amount": 1200, "currency": "EUR"})
    assert changed.status_code == 200, changed.text

    after = await product_service.client.get(f"/variants/{variant_id}")
    assert after.json()["price"] == {"amount": 1200, "currency": "EUR"}


async def test_a_variant_is_found_on_whichever_shard_holds_it(
        product_database_url: str, shard_database_urls: list[str],
        redis_server: RedisServer, redis: Redis, tmp_path: Path) -> None:
    map_file = tmp_path / "shard-map.json"
    map_file.write_bytes(orjson.dumps(shard_map(shard_database_urls, "v1", **FIRST_MAP)))
    settings = product_settings(product_database_url, redis_server.url,
                                shard_map_path=map_file)
    app = create_app(settings)
    async with running(app) as client:
        service = ProductService(app, client, settings, redis)
        ids = {}
        for category in ("electronics", "shoes", "garden"):  # one per shard
            await service.category(category)
            product = await service.product(category, variants=[variant(amount=len(category))])
            ids[category] = product["variants"][0]["id"]
        for category, variant_id in ids.items():
            body = (await client.get(f"/variants/{variant_id}")).json()
            assert (body["category"], body["price"]["amount"]) == (category, len(category))
