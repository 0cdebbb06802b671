"""Request ids, JSON logs, Prometheus metrics, tracing, /health."""

from __future__ import annotations

import logging

import orjson
import pytest
from fastapi import APIRouter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from services.core.app import create_service_app
from services.core.logging import JsonFormatter, bind_request_id
from services.core.metrics import counter
from services.core.tracing import setup_tracing
from tests.services.support import running

from .conftest import make_settings


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/products/{product_id}")
    async def product(product_id: str) -> dict[str, str]:
        logging.getLogger("test.product").info("reading %s", product_id)
        return {"id": product_id}

    return router


def _app(**settings: object):  # type: ignore[no-untyped-def]
    return create_service_app(make_settings(**settings), routers=[_router()],
                              uses_database=False, uses_redis=False, uses_bus=False)


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples if sample.name == name
    }


async def test_the_callers_request_id_is_echoed_and_a_missing_one_generated() -> None:
    async with running(_app()) as client:
        given = await client.get("/products/1", headers={"X-Request-Id": "abc-123"})
        generated = await client.get("/products/1")
        forged = await client.get("/products/1", headers={"X-Request-Id": "bad\nid"})

    assert given.headers["x-request-id"] == "abc-123"
    assert len(generated.headers["x-request-id"]) == 32
    assert forged.headers["x-request-id"] != "bad\nid"


async def test_log_lines_are_json_carrying_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(_app()) as client:
        await client.get("/products/42", headers={"X-Request-Id": "req-42"})

    formatter = JsonFormatter("widgets")
    record = next(r for r in caplog.records if r.name == "test.product")
    bind_request_id("req-42")  # the formatter reads the id the record was made under
    try:
        line = orjson.loads(formatter.format(record))
    finally:
        bind_request_id(None)
    assert line["message"] == "reading 42"
    assert line["service"] == "widgets"
    assert line["request_id"] == "req-42"
    access = next(r for r in caplog.records if r.name == "kommerce.access")
    assert access.__dict__["status"] == 200


async def test_metrics_count_requests_by_route_template_not_raw_path() -> None:
    async with running(_app()) as client:
        for product_id in ("a", "b", "c"):
            await client.get(f"/products/{product_id}")
        await client.get("/no/such/path")
        text = (await client.get("/metrics")).text

    totals = _samples(text, "http_requests_total")
    assert totals[(("method", "GET"), ("route", "/products/{product_id}"),
                   ("status_code", "200"))] == 3
    assert totals[(("method", "GET"), ("route", "<unmatched>"), ("status_code", "404"))] == 1
    histogram = _samples(text, "http_request_duration_seconds_count")
    assert histogram[(("method", "GET"), ("route", "/products/{product_id}"),
                      ("status_code", "200"))] == 3


async def test_metrics_count_unknown_methods_under_one_label() -> None:
    """The method is the client's choice; counting each as sent would let a client grow
    the metric without bound."""
    async with running(_app()) as client:
        await client.get("/products/a")
        for method in ("FROBNICATE", "PURGE", "X-ANYTHING"):
            await client.request(method, "/products/a")
        text = (await client.get("/metrics")).text

    by_method: dict[str, float] = {}
    for labels, count in _samples(text, "http_requests_total").items():
        method = dict(labels)["method"]
        by_method[method] = by_method.get(method, 0) + count
    assert by_method == {"GET": 1, "other": 3}


async def test_domain_counters_appear_on_metrics() -> None:
    orders = counter("orders_total", "Orders by status", ["status"])
    again = counter("orders_total", "Orders by status", ["status"])
    orders.labels("confirmed").inc()

    async with running(_app()) as client:
        text = (await client.get("/metrics")).text

    assert again is orders
    assert _samples(text, "orders_total")[(("status", "confirmed"),)] >= 1


async def test_health_is_alive_without_dependencies() -> None:
    async with running(_app()) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")

    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200


async def test_tracing_continues_the_callers_trace_and_names_the_route() -> None:
    app = _app(otel_enabled=True)
    exporter = InMemorySpanExporter()
    app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "0af7651916cd43dd8448eb211c80319c"

    async with running(app) as client:
        await client.get("/products/9",
                         headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})

    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == ["GET /products/{product_id}"]
    assert format(server[0].context.trace_id, "032x") == trace_id


async def test_log_lines_inside_a_traced_request_carry_the_trace_id() -> None:
    app = _app(otel_enabled=True)
    seen: list[dict[str, object]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(orjson.loads(JsonFormatter("widgets").format(record)))

    handler = Capture()
    logging.getLogger("test.product").addHandler(handler)
    try:
        async with running(app) as client:
            await client.get("/products/5", headers={
                "traceparent": "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    finally:
        logging.getLogger("test.product").removeHandler(handler)

    assert seen[0]["trace_id"] == "1af7651916cd43dd8448eb211c80319c"
    assert len(str(seen[0]["request_id"])) == 32


async def test_tracing_off_creates_no_spans_even_with_a_global_provider() -> None:
    app = _app(otel_enabled=False)

    assert app.state.tracer_provider is None
    async with running(app) as client:
        assert (await client.get("/products/1")).status_code == 200


def test_tracing_off_means_no_provider() -> None:
    assert setup_tracing(make_settings(otel_enabled=False)) is None
