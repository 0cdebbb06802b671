"""Schemathesis against the order service's own OpenAPI document: no request, valid or
not, gets a 5xx or an answer off its documented shape. Requests carry an admin token so
checkout, carts and cancellation are exercised past authentication. Cases are drawn per operation,
as in the user service's fuzz test. The participants are the scripted ones: this is about
the order service's own answers, not what the other services do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from services.core.auth import TokenService
from services.order import api
from services.order.app import create_app
from tests.services.fuzz import fuzz_operation, operation_ids, operations
from tests.services.order.conftest import ScriptedParticipants, order_settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiSchema

    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = operations([api.router])


@pytest.fixture(scope="module")
def fuzzed_app(order_database_url: str, redis_server: RedisServer) -> Iterator[FastAPI]:
    world = ScriptedParticipants()
    app = create_app(order_settings(order_database_url, redis_server.url), world, world)
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def order_api(fuzzed_app: FastAPI) -> OpenApiSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=operation_ids(OPERATIONS))
def test_no_request_makes_the_order_service_answer_5xx_or_off_schema(
        path: str, method: str, order_api: OpenApiSchema, fuzzed_app: FastAPI) -> None:
    token = TokenService(fuzzed_app.state.settings).issue_access("root", ["admin"]).token
    fuzz_operation(order_api, path, method, {"Authorization": f"Bearer {token}"})
