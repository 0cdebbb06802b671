"""Property-based: no request the OpenAPI document allows makes the service answer 5xx.

The service runs under uvicorn on loopback with its real lifespan (embedded PostgreSQL
engine, the seeded catalog), and schemathesis sends generated requests with an admin token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from kommerce.testbed.ports import free_port, wait_until
from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from services.core.db import Database
from services.search.app import create_app
from services.search.postgres import PostgresBackend
from services.search.service import SearchIndexer
from services.search.settings import SearchSettings

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
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="search-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60, what="the search service",
                   alive=lambda: None if thread.is_alive() else "server thread ended")
        asyncio.run(seed(service_settings))
        token = TokenService(service_settings).issue_access("fuzzer", ["admin"]).token
        yield Served(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"},
                     app.openapi())
    finally:
        server.should_exit = True
        thread.join(timeout=30)


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
    api = schemathesis.openapi.from_dict(served_search.openapi)
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path == "/search/rebuild":
            continue  # slow by design and covered by its own test

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(base_url=served_search.base_url,
                                 headers=served_search.headers, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text}")

        try:
            no_server_error()
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])

    assert not failures, "\n".join(failures)
