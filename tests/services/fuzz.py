"""One schemathesis harness for every service: each operation of the app's own OpenAPI
document gets valid and invalid requests; none may answer 5xx or off its documented shape.

Cases are drawn per operation inside a plain test (schemathesis' pytest integration does not
work with pytest 9), so each operation is its own parametrised test id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager

import schemathesis
import uvicorn
from fastapi import FastAPI
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

from kommerce.testbed.ports import free_port, wait_until

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


@contextmanager
def served(app: FastAPI, name: str) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port, with its real lifespan, in a
    thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"{name}-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60, what=f"the {name} service",
                   alive=lambda: None if thread.is_alive() else "server thread ended")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def server_errors(openapi: dict[str, object], base_url: str, headers: dict[str, str], *,
                  aim: Callable[[schemathesis.Case], None] | None = None,
                  skip_paths: Collection[str] = (), max_examples: int = 25) -> list[str]:
    """Every operation of a served app gets ``max_examples`` generated requests over HTTP;
    returns one line per operation that answered 5xx. ``aim`` may point a case at seeded
    rows before it is sent."""
    failures: list[str] = []
    for result in schemathesis.openapi.from_dict(openapi).get_all_operations():
        operation = result.ok()
        if operation.path in skip_paths:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=max_examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            if aim is not None:
                aim(case)
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text}")

        try:
            no_server_error()
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0])
    return failures


def aim_path_parameters(rows: dict[str, str]) -> Callable[[schemathesis.Case], None]:
    """Replace generated path parameters named like a seeded row's key with that row."""
    def aim(case: schemathesis.Case) -> None:
        for name in list(case.path_parameters or {}):
            if name in rows:
                case.path_parameters[name] = rows[name]  # type: ignore[index]
    return aim
