"""Fixtures for the product service's tests: a database and three shard databases on the
session PostgreSQL, and per test a schema, cache prefix and stream prefix of its own, so
tests never see each other's rows, keys or events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from services.core.auth import TokenService
from services.product.app import create_app
from services.product.settings import ProductSettings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

SHARD_COUNT = 3
#: The subject the order service calls the product service as.
CHECKOUT = "service:order"


@pytest.fixture(scope="session")
def product_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("product_tests")


@pytest.fixture(scope="session")
def shard_database_urls(postgres_server: PostgresServer) -> list[str]:
    return [postgres_server.create_database(f"product_shard_{i}")
            for i in range(1, SHARD_COUNT + 1)]


def product_settings(database_url: str, redis_url: str, **overrides: Any) -> ProductSettings:
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": database_url,
        "database_schema": unique("p"), "redis_url": redis_url,
        "cache_prefix": unique("c") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.1, "reservation_sweep_interval_seconds": 0.2,
        "config_reload_interval_seconds": 0.1, "shard_retire_grace_seconds": 0.5,
    }
    values.update(overrides)
    return ProductSettings(**values)


@dataclass
class ProductService:
    """A running product service and what a test needs to talk to it."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: ProductSettings
    redis: Redis

    def token(self, user: str, *roles: str) -> dict[str, str]:
        issued = TokenService(self.settings).issue_access(user, roles)
        return {"Authorization": f"Bearer {issued.token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.token("admin-1", "admin")

    @property
    def shopper(self) -> dict[str, str]:
        return self.token("shopper-1", "customer")

    @property
    def checkout(self) -> dict[str, str]:
        """The order service's identity: the only caller that holds, sells or frees stock."""
        return self.token(CHECKOUT, "service")

    async def category(self, slug: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.post("/categories", headers=self.admin,
                                          json={"slug": slug, "name": slug.title(), **fields})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def product(self, category: str, name: str = "Widget", *,
                      variants: list[dict[str, Any]] | None = None,
                      **fields: Any) -> dict[str, Any]:
        body = {"category": category, "name": name, **fields,
                "variants": variants or [variant()]}
        response = await self.client.post("/products", headers=self.admin, json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def reserve(self, lines: list[tuple[str, int]], *, reservation_id: str | None = None,
                      user: str = CHECKOUT, roles: tuple[str, ...] = ("service",),
                      **fields: Any) -> httpx.Response:
        """A reservation as the checkout (``user`` with ``roles``) asks for one."""
        import uuid

        body = {"id": reservation_id or str(uuid.uuid4()),
                "lines": [{"variant_id": v, "quantity": q} for v, q in lines], **fields}
        return await self.client.post("/inventory/reservations", json=body,
                                      headers=self.token(user, *roles))


def variant(sku: str | None = None, amount: int = 1000, currency: str = "EUR", stock: int = 10,
            **fields: Any) -> dict[str, Any]:
    return {"sku": sku or unique("SKU"), "price": {"amount": amount, "currency": currency},
            "stock": stock, **fields}


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def product_service(product_database_url: str, redis_server: RedisServer,
                          redis: Redis) -> AsyncIterator[ProductService]:
    settings = product_settings(product_database_url, redis_server.url)
    app = create_app(settings)
    async with running(app) as client:
        yield ProductService(app, client, settings, redis)
