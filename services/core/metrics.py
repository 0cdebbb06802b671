"""Prometheus metrics: the HTTP RED metrics every service exposes, and domain counters.

HTTP metrics are labelled by the route *template* (``/products/{product_id}``), never the raw
path, so a scan of random URLs cannot blow up the series count. Each app keeps its HTTP
metrics in its own registry (two apps in one process, as in tests, do not mix their counts);
domain and core counters (``orders_total``, cache hits …) live in the process-wide default
registry through :func:`counter`/:func:`histogram`/:func:`gauge`, which return the existing
metric when a module is imported twice. ``/metrics`` serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from starlette.routing import BaseRoute
from starlette.types import Scope

#: Wider than the reference's (0.1 … 5 s): the P95 < 200 ms floor needs resolution below 100 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
UNMATCHED_ROUTE = "<unmatched>"

M = TypeVar("M", bound=MetricWrapperBase)


def _get_or_create(kind: type[M], name: str, registry: CollectorRegistry,
                   create: Callable[[], M]) -> M:
    """The metric registered as ``name`` (which must be a ``kind``), else ``create()``."""
    # prometheus_client registers counters under the name without "_total" as well.
    existing = registry._names_to_collectors.get(name)  # no public lookup
    if existing is None and name.endswith("_total"):
        existing = registry._names_to_collectors.get(name[: -len("_total")])
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name} already registered as {type(existing).__name__}")
        return existing
    return create()


def counter(name: str, documentation: str, labelnames: Sequence[str] = (),
            registry: CollectorRegistry = REGISTRY) -> Counter:
    """A process-wide counter, e.g. ``counter("orders_total", "Orders", ["status"])``."""
    return _get_or_create(Counter, name, registry, lambda: Counter(
        name, documentation, labelnames=tuple(labelnames), registry=registry))


def gauge(name: str, documentation: str, labelnames: Sequence[str] = (),
          registry: CollectorRegistry = REGISTRY) -> Gauge:
    return _get_or_create(Gauge, name, registry, lambda: Gauge(
        name, documentation, labelnames=tuple(labelnames), registry=registry))


def histogram(name: str, documentation: str, labelnames: Sequence[str] = (),
              registry: CollectorRegistry = REGISTRY,
              buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
    return _get_or_create(Histogram, name, registry, lambda: Histogram(
        name, documentation, labelnames=tuple(labelnames), registry=registry,
        buckets=tuple(buckets)))


class HttpMetrics:
    """The per-app request histogram and counter."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "status_code")
        self.duration = Histogram(
            "http_request_duration_seconds", "Duration of HTTP requests in seconds",
            labels, registry=self.registry, buckets=LATENCY_BUCKETS,
        )
        self.requests = Counter(
            "http_requests_total", "Total number of HTTP requests", labels,
            registry=self.registry,
        )
        # (method, route, status) -> its histogram and counter children. ``labels()`` takes
        # a lock and builds a key each call; the set of routes is fixed (templates, not raw
        # paths), so the children are looked up once and kept.
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in STANDARD_METHODS:
            method = OTHER_METHOD  # the client chooses it: an unbounded label otherwise
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            status_code = str(status)
            children = (self.duration.labels(method, route, status_code),
                        self.requests.labels(method, route, status_code))
            self._children[key] = children
        children[0].observe(seconds)
        children[1].inc()

    def exposition(self) -> bytes:
        """This app's HTTP metrics followed by the process-wide ones."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


#: Methods counted under their own name; any other is counted as ``OTHER_METHOD``.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (the router stores the matched
    route in the scope it shares with the middleware), or ``<unmatched>``."""
    route: BaseRoute | None = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def metrics_router(metrics: HttpMetrics) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def prometheus_metrics(_: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
