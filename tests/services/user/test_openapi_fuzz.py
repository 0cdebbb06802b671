"""Schemathesis against the user service's own OpenAPI document: whatever a client sends,
valid or not, no answer is a 5xx, and every answer has a documented status, content type
and shape.

Requests carry the bootstrap admin's access token, so the profile, address-book and admin
endpoints are exercised past authentication. Each operation is its own test case with a
couple of dozen examples, so the whole run takes seconds.

Schemathesis's lazy pytest integration (``schemathesis.pytest.from_fixture``) reads a
private attribute pytest 9 no longer has, so the cases are drawn from each operation's
Hypothesis strategy directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from services.user import api
from services.user.app import create_app
from tests.services.fuzz import fuzz_operation, operation_ids, operations

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, user_settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiSchema

    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = operations(api.routers)


@pytest.fixture(scope="module")
def fuzzed_app(user_database_url: str, redis_server: RedisServer) -> Iterator[FastAPI]:
    # Schemathesis runs the app's lifespan in its own event-loop thread, once per app.
    app = create_app(user_settings(user_database_url, redis_server.url,
                                   login_max_failures_per_ip=100_000))
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def user_api(fuzzed_app: FastAPI) -> OpenApiSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.fixture(scope="module")
def admin_headers(fuzzed_app: FastAPI) -> dict[str, str]:
    with asgi.get_client(fuzzed_app) as client:
        response = client.post("/auth/login",
                               json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=operation_ids(OPERATIONS))
def test_no_request_makes_the_user_service_answer_5xx_or_off_schema(
    path: str, method: str, user_api: OpenApiSchema, admin_headers: dict[str, str],
) -> None:
    fuzz_operation(user_api, path, method, admin_headers)
