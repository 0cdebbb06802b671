"""Schemathesis against the order service's own OpenAPI document: no request, valid or
not, gets a 5xx or an answer off its documented shape. Requests carry an admin token so
checkout, carts and cancellation are exercised past authentication. Cases are drawn per operation,
as in the user service's fuzz test."""

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

from services.core.auth import TokenService
from services.order import api
from services.order.app import create_app
from tests.services.order.conftest import World, order_settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiSchema

    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = sorted((route.path, method) for route in api.router.routes
                    if isinstance(route, APIRoute) for method in route.methods)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_app(order_database_url: str, redis_server: RedisServer) -> Iterator[FastAPI]:
    world = World()
    app = create_app(order_settings(order_database_url, redis_server.url), world, world)
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def order_api(fuzzed_app: FastAPI) -> OpenApiSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_request_makes_the_payment_service_answer_5xx_or_off_schema(
        path: str, method: str, order_api: OpenApiSchema, fuzzed_app: FastAPI) -> None:
    token = TokenService(fuzzed_app.state.settings).issue_access("root", ["admin"]).token
    operation = order_api[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    call()
