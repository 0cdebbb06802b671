"""Fixtures for the search service's tests: a running service per engine, each in its own
schema, cache prefix, topics and (for Elasticsearch) index alias, and a seeded catalog.

Engine-parametrised fixtures run every behavioural test against PostgreSQL and the real
Elasticsearch node; the ``elasticsearch`` marker lets a run without it deselect those.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from services.core.auth import TokenService
from services.search.app import create_app
from services.search.service import SearchIndexer
from services.search.settings import SearchSettings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

ENGINES = [
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis], id="postgres"),
    pytest.param("elasticsearch", marks=[pytest.mark.postgres, pytest.mark.redis,
                                         pytest.mark.elasticsearch], id="elasticsearch"),
]


@pytest.fixture(scope="session")
def search_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("search_tests")


def search_settings(database_url: str, redis_url: str, engine: str,
                    elasticsearch_url: str = "http://127.0.0.1:9", **overrides: Any
                    ) -> SearchSettings:
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": database_url,
        "database_schema": unique("search"), "redis_url": redis_url,
        "cache_prefix": unique("s") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.1, "search_backend": engine,
        "elasticsearch_url": elasticsearch_url,
        "search_index_alias": unique("products").lower(),
    }
    values.update(overrides)
    return SearchSettings(**values)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def indexer(self) -> SearchIndexer:
        return self.app.state.indexer

    def token(self, user: str, *roles: str) -> dict[str, str]:
        issued = TokenService(self.app.state.settings).issue_access(user, list(roles))
        return {"Authorization": f"Bearer {issued.token}"}

    async def apply(self, *products: dict[str, Any]) -> None:
        """Apply ``product.created``/``updated`` payloads as the consumer would."""
        indexer = self.indexer
        async with indexer.database.session() as session, session.begin():
            for product in products:
                await indexer.product_changed(session, product)
        await indexer.backend.refresh()

    async def search(self, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/search", params=params)
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def search_service(request: pytest.FixtureRequest, engine: str, database_url: str,
                         redis_url: str, **overrides: Any) -> AsyncIterator[Service]:
    es_url = (request.getfixturevalue("search_engine").url if engine == "elasticsearch"
              else "http://127.0.0.1:9")
    app = create_app(search_settings(database_url, redis_url, engine, es_url, **overrides))
    async with running(app) as client:
        yield Service(app, client)


_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def product(name: str, category: str, *, brand: str | None = None, description: str = "",
            price: int = 1000, colors: tuple[str, ...] = (), sizes: tuple[str, ...] = (),
            available: int = 5, version: int = 1, age_days: int = 0,
            product_id: uuid.UUID | None = None) -> dict[str, Any]:
    """A product as the product service publishes it (``ProductOut`` JSON): one variant per
    colour and size, all at ``price``."""
    pid = product_id or uuid.uuid4()
    combos = [(c, s) for c in (colors or (None,)) for s in (sizes or (None,))]
    variants = []
    for i, (color, size) in enumerate(combos):
        attributes = {k: v for k, v in (("color", color), ("size", size)) if v}
        variants.append({
            "id": str(uuid.uuid5(pid, str(i))), "sku": f"{name[:8].upper()}-{i}-{pid.hex[:6]}",
            "name": name, "attributes": attributes,
            "price": {"amount": price, "currency": "EUR"},
            "stock": {"on_hand": available, "reserved": 0, "available": available}})
    created = (_EPOCH - timedelta(days=age_days)).isoformat()
    return {"id": str(pid), "category": category, "name": name, "description": description,
            "attributes": {"brand": brand} if brand else {}, "images": [],
            "variants": variants, "version": version, "created_at": created,
            "updated_at": created}


#: The seeded catalog: twelve products chosen so relevance, facets and typos have one answer.
CATALOG = [
    product("Trail Running Shoes", "shoes", brand="Stride", price=8999, colors=("red", "blue"),
            sizes=("42", "43"), description="Grippy soles for running on mud", age_days=1),
    product("Road Running Shoes", "shoes", brand="Stride", price=12999, colors=("black",),
            description="Light and fast on tarmac", age_days=2),
    product("Leather Dress Shoes", "shoes", brand="Oxford", price=15999, colors=("brown",),
            description="Formal shoes for the office", age_days=3),
    product("Running Socks", "socks", brand="Stride", price=999, colors=("white",),
            description="Cushioned socks", age_days=4),
    product("Wireless Headphones", "electronics", brand="Sonica", price=19999,
            colors=("black",), description="Noise cancelling over-ear sound", age_days=5),
    product("Bluetooth Speaker", "electronics", brand="Sonica", price=4999, colors=("red",),
            description="Portable sound for the park", age_days=6),
    product("Laptop Pro 14", "electronics", brand="Apex", price=149999, colors=("silver",),
            description="A fast notebook computer", age_days=7),
    product("Laptop Stand", "accessories", brand="Apex", price=3999, colors=("silver",),
            description="Aluminium desk riser", age_days=8),
    product("Cotton T-Shirt", "apparel", brand="Basics", price=1999, colors=("white", "black"),
            sizes=("M", "L"), description="Soft everyday tee", age_days=9),
    product("Yoga Mat", "sports", brand="Zenfit", price=2999, colors=("purple",), available=0,
            description="Non-slip exercise mat", age_days=10),
    product("Water Bottle", "sports", brand="Zenfit", price=1499, colors=("blue",),
            description="Keeps drinks cold while running", age_days=11),
    product("Mechanical Keyboard", "electronics", brand="Apex", price=8999, colors=("black",),
            description="Clicky keys for typing", age_days=12),
]

BY_NAME = {p["name"]: p["id"] for p in CATALOG}


@pytest.fixture(scope="module", params=ENGINES)
async def seeded(request: pytest.FixtureRequest, search_database_url: str,
                 redis_server: RedisServer) -> AsyncIterator[Service]:
    """A service of each engine holding :data:`CATALOG`."""
    async with search_service(request, request.param, search_database_url,
                              redis_server.url) as service:
        await service.apply(*CATALOG)
        yield service
