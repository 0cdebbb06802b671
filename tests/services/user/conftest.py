"""Fixtures for the user service's tests: one running service per test module on the
session's PostgreSQL and Redis, each in a schema and key prefix of its own, and helpers
that register, log in and call it the way a shop front would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from services.core.db import Database
from services.user.app import create_app
from services.user.settings import UserSettings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

PASSWORD = "correct-horse-42"
ADMIN_EMAIL = "root@kommerce.example"
ADMIN_PASSWORD = "admin-password-42"


@pytest.fixture(scope="session")
def user_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("user_tests")


def user_settings(database_url: str, redis_url: str, **overrides: Any) -> UserSettings:
    """Settings isolating one app: its own schema, cache/limit keys and topics; small
    login limits so tests reach them quickly; the bootstrap admin seeded."""
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": database_url,
        "database_schema": unique("user"), "redis_url": redis_url,
        "cache_prefix": unique("u") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.1,
        "login_max_failures_per_email": 3, "login_max_failures_per_ip": 8,
        "login_failure_window_seconds": 60, "max_addresses_per_user": 5,
        "bootstrap_admin_email": ADMIN_EMAIL, "bootstrap_admin_password": ADMIN_PASSWORD,
    }
    values.update(overrides)
    return UserSettings(**values)


@dataclass
class Service:
    """A running user service and a client for it."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def settings(self) -> UserSettings:
        settings = self.app.state.settings
        assert isinstance(settings, UserSettings)
        return settings

    @property
    def database(self) -> Database:
        return self.app.state.runtime.require_database()  # type: ignore[no-any-return]

    @asynccontextmanager
    async def client_at(self, address: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client whose requests come from ``address`` (for the per-address limits)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000),
                                        raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            yield c

    async def register(self, email: str | None = None, password: str = PASSWORD,
                       **fields: Any) -> dict[str, Any]:
        email = email or f"{unique('shopper')}@example.com"
        response = await self.client.post("/auth/register", json={
            "email": email, "password": password, **fields})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post("/auth/login",
                                          json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def signed_in(self, **fields: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """A new customer and the Authorization header of a fresh login."""
        user = await self.register(**fields)
        tokens = await self.login(user["email"])
        return user, bearer(tokens["access_token"])

    async def admin(self) -> dict[str, str]:
        return bearer((await self.login(ADMIN_EMAIL, ADMIN_PASSWORD))["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def user_service(database_url: str, redis_url: str,
                       **overrides: Any) -> AsyncIterator[Service]:
    app = create_app(user_settings(database_url, redis_url, **overrides))
    async with running(app) as client:
        yield Service(app, client)


@pytest.fixture(scope="module")
async def service(user_database_url: str, redis_server: RedisServer) -> AsyncIterator[Service]:
    async with user_service(user_database_url, redis_server.url) as running_service:
        yield running_service
