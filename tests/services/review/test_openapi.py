"""Property-based: no request the OpenAPI document allows makes the service answer 5xx.

The service runs under uvicorn on loopback with its real lifespan; schemathesis sends
generated requests with an admin token (so moderation and writes are reached), once with
generated ids and once aimed at a seeded product and review.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from kommerce.testbed.ports import free_port, wait_until
from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from services.review.app import create_app

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
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="review-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60, what="the review service",
                   alive=lambda: None if thread.is_alive() else "server thread ended")
        tokens = TokenService(service_settings)
        admin = tokens.issue_access("fuzzer", ["admin"]).token
        author = tokens.issue_access("author").token
        yield Served(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {admin}"},
                     {"Authorization": f"Bearer {author}"}, app.openapi())
    finally:
        server.should_exit = True
        thread.join(timeout=30)


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
    api = schemathesis.openapi.from_dict(served_review.openapi)
    rows = seed(served_review) if target == "existing rows" else None
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            if rows is not None:
                for name in list(case.path_parameters or {}):
                    if name in rows:
                        case.path_parameters[name] = rows[name]  # type: ignore[index]
            response = case.call(base_url=served_review.base_url,
                                 headers=served_review.headers, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text}")

        try:
            no_server_error()
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])

    assert not failures, "\n".join(failures)
