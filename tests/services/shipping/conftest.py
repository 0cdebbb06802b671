"""Fixtures for the shipping service's tests: one running service per module on the
session's PostgreSQL and Redis, and tokens for a shopper, an admin and the order saga."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from services.core.auth import TokenService
from services.core.db import Database
from services.shipping.app import create_app
from services.shipping.settings import ShippingSettings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer


@pytest.fixture(scope="session")
def shipping_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("shipping_tests")


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def database(self) -> Database:
        return self.app.state.runtime.require_database()  # type: ignore[no-any-return]

    def auth(self, user: str | None = None, *roles: str) -> dict[str, str]:
        token = TokenService(self.app.state.settings).issue_access(
            user or unique("shopper"), roles)
        return {"Authorization": f"Bearer {token.token}"}


@pytest.fixture(scope="module")
async def service(shipping_database_url: str,
                  redis_server: RedisServer) -> AsyncIterator[Service]:
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": shipping_database_url,
        "database_schema": unique("shipping"), "redis_url": redis_server.url,
        "cache_prefix": unique("s") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.1,
    }
    app = create_app(ShippingSettings(**values))
    async with running(app) as client:
        yield Service(app, client)
