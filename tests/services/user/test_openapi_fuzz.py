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
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.user import api
from services.user.app import create_app

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, user_settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiSchema

    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = sorted(
    (route.path, method)
    for router in api.routers for route in router.routes if isinstance(route, APIRoute)
    for method in route.methods
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


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


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_request_makes_the_user_service_answer_5xx_or_off_schema(
    path: str, method: str, user_api: OpenApiSchema, admin_headers: dict[str, str],
) -> None:
    operation = user_api[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=admin_headers, checks=CHECKS)

    call()
