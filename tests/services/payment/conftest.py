"""Fixtures for the payment service's tests: one running service per module on the
session's PostgreSQL and Redis, with the sandbox gateway, and tokens for a shopper, an
admin and the order saga's service identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from services.core.auth import TokenService
from services.core.db import Database
from services.payment.app import create_app
from services.payment.providers import PaymentGateway
from services.payment.providers.sandbox import SandboxGateway
from services.payment.settings import PaymentSettings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

WEBHOOK_SECRET = "whsec_test_kommerce_payment_secret"


@pytest.fixture(scope="session")
def payment_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("payment_tests")


def payment_settings(database_url: str, redis_url: str, **overrides: Any) -> PaymentSettings:
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": database_url,
        "database_schema": unique("payment"), "redis_url": redis_url,
        "cache_prefix": unique("p") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.1, "stripe_webhook_secret": WEBHOOK_SECRET,
    }
    values.update(overrides)
    return PaymentSettings(**values)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def settings(self) -> PaymentSettings:
        settings = self.app.state.settings
        assert isinstance(settings, PaymentSettings)
        return settings

    @property
    def database(self) -> Database:
        return self.app.state.runtime.require_database()  # type: ignore[no-any-return]

    def auth(self, user: str | None = None, *roles: str) -> dict[str, str]:
        token = TokenService(self.settings).issue_access(user or unique("shopper"), roles)
        return {"Authorization": f"Bearer {token.token}"}

    def saga(self) -> dict[str, str]:
        """The order saga's identity: the only caller that may charge."""
        return self.auth("service:order", "service")


async def start_service(database_url: str, redis_url: str,
                        gateway: PaymentGateway | None = None,
                        **overrides: Any) -> AsyncIterator[Service]:
    app = create_app(payment_settings(database_url, redis_url, **overrides),
                     gateway=gateway or SandboxGateway())
    async with running(app) as client:
        yield Service(app, client)


@pytest.fixture(scope="module")
async def service(payment_database_url: str,
                  redis_server: RedisServer) -> AsyncIterator[Service]:
    async for started in start_service(payment_database_url, redis_server.url):
        yield started
