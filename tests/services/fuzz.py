"""One schemathesis harness for every service: each operation of the app's own OpenAPI
document gets valid and invalid requests; none may answer 5xx or off its documented shape.

Cases are drawn per operation inside a plain test (schemathesis' pytest integration does not
work with pytest 9), so each operation is its own parametrised test id.
"""

from __future__ import annotations

from collections.abc import Iterable

import schemathesis
from fastapi.routing import APIRoute, APIRouter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def operations(routers: Iterable[APIRouter]) -> list[tuple[str, str]]:
    """Every (path, method) the routers serve, sorted so test ids are stable."""
    return sorted((route.path, method) for router in routers for route in router.routes
                  if isinstance(route, APIRoute) for method in route.methods)


def operation_ids(ops: list[tuple[str, str]]) -> list[str]:
    return [f"{method} {path}" for path, method in ops]


def fuzz_operation(schema: OpenApiSchema, path: str, method: str, headers: dict[str, str],
                   max_examples: int = 25) -> None:
    """Send ``max_examples`` generated requests, valid and invalid, to one operation."""
    operation = schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()
