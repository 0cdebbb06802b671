"""Schemathesis against the payment service's own OpenAPI document (sandbox gateway): no
request, valid or not, gets a 5xx or an answer off its documented shape. Requests carry an
admin and service token so charges, refunds and audit trails are exercised past
authentication; the webhook is
fuzzed unsigned and must refuse with 400. Cases are drawn per operation, as in the user
service's fuzz test (schemathesis's lazy pytest integration does not work on pytest 9)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from services.core.auth import TokenService
from services.payment import api
from services.payment.app import create_app
from services.payment.providers.sandbox import SandboxGateway
from tests.services.fuzz import fuzz_operation, operation_ids, operations

from .conftest import payment_settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiSchema

    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = operations([api.router])


@pytest.fixture(scope="module")
def fuzzed_app(payment_database_url: str, redis_server: RedisServer) -> Iterator[FastAPI]:
    app = create_app(payment_settings(payment_database_url, redis_server.url),
                     gateway=SandboxGateway())
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def payment_api(fuzzed_app: FastAPI) -> OpenApiSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=operation_ids(OPERATIONS))
def test_no_request_makes_the_payment_service_answer_5xx_or_off_schema(
        path: str, method: str, payment_api: OpenApiSchema, fuzzed_app: FastAPI) -> None:
    token = TokenService(fuzzed_app.state.settings).issue_access("root", ["admin", "service"]).token
    fuzz_operation(payment_api, path, method, {"Authorization": f"Bearer {token}"})
