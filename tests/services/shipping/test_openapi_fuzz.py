"""Schemathesis against the shipping service's own OpenAPI document: no request, valid or
not, gets a 5xx or an answer off its documented shape. Requests carry an admin token so
shipments and tracking are exercised past authentication. Cases are drawn per operation,
as in the user service's fuzz test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from services.core.auth import TokenService
from services.shipping import api
from services.shipping.app import create_app
from services.shipping.settings import ShippingSettings
from tests.services.fuzz import fuzz_operation, operation_ids, operations
from tests.services.support import unique

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiSchema

    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = operations([api.router])


@pytest.fixture(scope="module")
def fuzzed_app(shipping_database_url: str, redis_server: RedisServer) -> Iterator[FastAPI]:
    app = create_app(ShippingSettings(
        environment="test", log_json=False, database_url=shipping_database_url,
        database_schema=unique("shipping"), redis_url=redis_server.url,
        cache_prefix=unique("s") + ":", event_topic_prefix=unique("t") + "."))
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def shipping_api(fuzzed_app: FastAPI) -> OpenApiSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=operation_ids(OPERATIONS))
def test_no_request_makes_the_shipping_service_answer_5xx_or_off_schema(
        path: str, method: str, shipping_api: OpenApiSchema, fuzzed_app: FastAPI) -> None:
    token = TokenService(fuzzed_app.state.settings).issue_access("root", ["admin"]).token
    fuzz_operation(shipping_api, path, method, {"Authorization": f"Bearer {token}"})
