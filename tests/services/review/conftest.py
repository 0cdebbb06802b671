"""Fixtures for the review service's tests: one running service per module in its own
schema, cache prefix and topics, and helpers acting as shoppers and as a moderator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from services.core.auth import TokenService
from services.review.app import create_app
from services.review.settings import ReviewSettings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer


@pytest.fixture(scope="session")
def review_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("review_tests")


def review_settings(database_url: str, redis_url: str, **overrides: Any) -> ReviewSettings:
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": database_url,
        "database_schema": unique("review"), "redis_url": redis_url,
        "cache_prefix": unique("r") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.1, "banned_words": "scam,rubbish",
    }
    values.update(overrides)
    return ReviewSettings(**values)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient

    def token(self, user: str, *roles: str) -> dict[str, str]:
        issued = TokenService(self.app.state.settings).issue_access(user, list(roles))
        return {"Authorization": f"Bearer {issued.token}"}

    def shopper(self) -> dict[str, str]:
        return self.token(unique("shopper"))

    def admin(self) -> dict[str, str]:
        return self.token("moderator", "admin")

    async def review(self, product_id: uuid.UUID, headers: dict[str, str], rating: int = 5,
                     **fields: Any) -> dict[str, Any]:
        response = await self.client.post(f"/products/{product_id}/reviews", headers=headers,
                                          json={"rating": rating, **fields})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def rating(self, product_id: uuid.UUID) -> dict[str, Any]:
        response = await self.client.get(f"/products/{product_id}/rating")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def service(review_database_url: str, redis_server: RedisServer
                  ) -> AsyncIterator[Service]:
    app = create_app(review_settings(review_database_url, redis_server.url))
    async with running(app) as client:
        yield Service(app, client)
