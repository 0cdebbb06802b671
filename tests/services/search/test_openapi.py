"""Property-based: no request the OpenAPI document allows makes the service answer 5xx.

The service runs under uvicorn on loopback with its real lifespan (embedded PostgreSQL
engine, the seeded catalog), and schemathesis sends generated requests with an admin token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from services.core.db import Database
from services.search.app import create_app
from services.search.postgres import PostgresBackend
from services.search.service import SearchIndexer
from services.search.settings import SearchSettings
from tests.services.fuzz import served, server_errors

from .conftest import CATALOG, search_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MAX_EXAMPLES = 30


@dataclass(frozen=True)
class Served:
    base_url: str
    headers: dict[str, str]
    openapi: dict[str, object]


@pytest.fixture(scope="module")
def served_search(search_database_url: str, redis_server: RedisServer) -> Iterator[Served]:
    service_settings = search_settings(search_database_url, redis_server.url, "postgres")
    app = create_app(service_settings)
    with served(app, "search") as base_url:
        asyncio.run(seed(service_settings))
        token = TokenService(service_settings).issue_access("fuzzer", ["admin"]).token
        yield Served(base_url, {"Authorization": f"Bearer {token}"}, app.openapi())


async def seed(service_settings: SearchSettings) -> None:
    """The catalog, written to the store the running PostgreSQL engine searches (on a
    connection of this thread's own: the server's loop runs in another thread)."""
    database = Database.from_settings(service_settings)
    try:
        indexer = SearchIndexer(database, PostgresBackend(database))
        async with database.session() as session, session.begin():
            for item in CATALOG:
                await indexer.product_changed(session, item)
    finally:
        await database.dispose()


def test_no_generated_request_gets_a_server_error(served_search: Served) -> None:
    # The rebuild is slow by design and covered by its own test.
    failures = server_errors(served_search.openapi, served_search.base_url,
                             served_search.headers, skip_paths={"/search/rebuild"},
                             max_examples=MAX_EXAMPLES)
    assert not failures, "\n".join(failures)
