"""Fixtures for the core's tests: a database of their own on the session PostgreSQL, a
fresh schema, settings and key/topic prefixes per test so tests never see each other's
rows, keys or streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from services.core.db import Database, create_engine
from services.core.settings import ServiceSettings
from tests.services.support import unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer


@pytest.fixture(scope="session")
def core_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("core_tests")


@pytest.fixture
def schema() -> str:
    return unique("t")


@pytest.fixture
async def database(core_database_url: str, schema: str) -> AsyncIterator[Database]:
    db = Database(create_engine(core_database_url, schema, pool_size=5), schema)
    yield db
    await db.dispose()


def make_settings(**overrides: object) -> ServiceSettings:
    values: dict[str, object] = {"service_name": "widgets", "environment": "test",
                                 "log_json": False}
    values.update(overrides)
    return ServiceSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def migrated(database: Database) -> Database:
    """The test schema with the sample service's and the core's tables."""
    from services.core import migrations

    from .sample_service.models import MIGRATIONS

    await migrations.upgrade(database, MIGRATIONS)
    return database
