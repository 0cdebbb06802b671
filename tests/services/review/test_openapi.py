"""Property-based: no request the OpenAPI document allows makes the service answer 5xx.

The service runs under uvicorn on loopback with its real lifespan; schemathesis sends
generated requests with an admin token (so moderation and writes are reached), once with
generated ids and once aimed at a seeded product and review.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from services.review.app import create_app
from tests.services.fuzz import aim_path_parameters, served, server_errors

from .conftest import review_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MAX_EXAMPLES = 25


@dataclass(frozen=True)
class Served:
    base_url: str
    headers: dict[str, str]
    author_headers: dict[str, str]
    openapi: dict[str, object]


@pytest.fixture(scope="module")
def served_review(review_database_url: str, redis_server: RedisServer) -> Iterator[Served]:
    service_settings = review_settings(review_database_url, redis_server.url)
    app = create_app(service_settings)
    with served(app, "review") as base_url:
        tokens = TokenService(service_settings)
        admin = tokens.issue_access("fuzzer", ["admin"]).token
        author = tokens.issue_access("author").token
        yield Served(base_url, {"Authorization": f"Bearer {admin}"},
                     {"Authorization": f"Bearer {author}"}, app.openapi())


def seed(served: Served) -> dict[str, str]:
    """A product with a review by someone other than the fuzzer, so votes are reachable."""
    product_id = str(uuid.uuid4())
    with httpx.Client(base_url=served.base_url, headers=served.author_headers,
                      timeout=30) as client:
        review = client.post(f"/products/{product_id}/reviews",
                             json={"rating": 4, "body": "fine"})
        review.raise_for_status()
    return {"product_id": product_id, "review_id": review.json()["id"]}


@pytest.mark.parametrize("target", ["generated ids", "existing rows"])
def test_no_generated_request_gets_a_server_error(served_review: Served, target: str) -> None:
    aim = aim_path_parameters(seed(served_review)) if target == "existing rows" else None
    failures = server_errors(served_review.openapi, served_review.base_url,
                             served_review.headers, aim=aim, max_examples=MAX_EXAMPLES)
    assert not failures, "\n".join(failures)
