"""The route table: which service serves a path, with which methods, auth and rate limit.

The CommerceService operator renders it from every service's ``spec.routes`` into the
ConfigMap ``kommerce-gateway-routes`` (``operators.commerceservice.render.route_table``)::

    {"version": "3f2a9c0d1e7b4a55",
     "routes": [{"pathPrefix": "/api/products", "methods": ["GET", "POST"],
                 "authRequired": false, "rateLimitPerMinute": 100,
                 "service": "product-service", "component": "product",
                 "upstream": "http://product-service.shop.svc.cluster.local:80"}]}

The gateway mounts it, hot-reloads it (a bad file is refused and the table in force stays,
see :mod:`services.core.reload`) and matches every request against it here. Without a file
it uses :func:`local_route_table`, the same routes with every service on loopback.

Matching is by the longest prefix that covers the path **on a segment boundary**, so
``/api/products`` serves ``/api/products`` and ``/api/products/42`` but never
``/api/productsadmin``. No I/O here besides reading the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from services.gateway.settings import GatewaySettings

#: The file name inside the mounted ConfigMap folder (``ROUTE_TABLE_KEY`` in the operator).
ROUTE_TABLE_FILE = "routes.json"

#: Methods a route may list; the order is the one 405 answers name them in.
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALL_METHODS = frozenset(KNOWN_METHODS)


class Route(BaseModel):
    """One entry of the table (camelCase as rendered, snake_case accepted)."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True,
                              extra="ignore")

    path_prefix: str = Field(
        min_length=1, max_length=200, pattern=r"^/[-A-Za-z0-9._~/]*$",
        description="Requests whose path is this prefix or continues it with '/' go here.")
    methods: frozenset[str] = Field(
        default=ALL_METHODS, min_length=1,
        description="Methods the route accepts (HEAD is implied by GET); others get 405.")
    auth_required: bool = Field(
        True, description="Refuse requests without a valid access token (401). When false a "
        "token is still verified if one is sent, and the caller's identity passed on.")
    rate_limit_per_minute: int | None = Field(
        None, ge=1, description="Requests per minute per client; None = no limit.")
    service: str = Field(
        min_length=1, max_length=253,
        description="The service's name: its circuit breaker's target and metric label.")
    upstream: str = Field(description="Base URL of the service, e.g. http://product:80.")
    timeout_seconds: float | None = Field(
        None, gt=0, le=300, description="How long the service may take to answer; None = "
        "its circuit breaker's timeout (the auth route's comes from the gateway settings).")

    @field_validator("methods", mode="before")
    @classmethod
    def _upper_methods(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, Iterable):
            methods = frozenset(str(method).upper() for method in value)
            if unknown := sorted(methods - ALL_METHODS):
                raise ValueError(f"unknown HTTP methods {unknown}")
            # HEAD is GET without a body (RFC 9110 §9.3.2); a GET route serves it too.
            return methods | {"HEAD"} if "GET" in methods else methods
        return value

    @field_validator("path_prefix")
    @classmethod
    def _no_dot_segments(cls, value: str) -> str:
        if has_dot_segment(value):
            raise ValueError("a path prefix must not contain '.' or '..' segments")
        # "/api/products/" and "/api/products" mean the same prefix.
        return value.rstrip("/") or "/"

    @field_validator("upstream")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"not a URL: {value!r}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream must be an http(s) URL with a host, not {value!r}")
        if url.query or url.fragment or url.path not in ("", "/"):
            raise ValueError(f"upstream must be a base URL without path or query: {value!r}")
        return value.rstrip("/")

    def covers(self, path: str) -> bool:
        """Whether ``path`` is this prefix or lies below it."""
        prefix = self.path_prefix
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")

    def allows(self, method: str) -> bool:
        return method in self.methods

    def allowed_methods(self) -> list[str]:
        return [method for method in KNOWN_METHODS if method in self.methods]


class RouteTable(BaseModel):
    """All routes, kept longest prefix first so the first covering route is the match."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: str = Field("", description="Content hash written by the operator; logged.")
    routes: tuple[Route, ...] = ()

    @field_validator("routes")
    @classmethod
    def _longest_prefix_first(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        seen: dict[str, str] = {}
        for route in routes:
            if (other := seen.get(route.path_prefix)) is not None:
                raise ValueError(f"path prefix {route.path_prefix} is routed twice "
                                 f"(to {other} and {route.service})")
            seen[route.path_prefix] = route.service
        return tuple(sorted(routes, key=lambda r: (-len(r.path_prefix), r.path_prefix)))

    def match(self, path: str) -> Route | None:
        """The route with the longest prefix covering ``path``, if any."""
        for route in self.routes:
            if route.covers(path):
                return route
        return None


def has_dot_segment(path: str) -> bool:
    """Whether ``path`` holds a ``.`` or ``..`` segment.

    Such a path would be matched here as written but resolved by an HTTP library or server
    further on (``/api/products/../users`` → ``/api/users``), slipping past the auth rule of
    the route it really reaches, so the gateway refuses them outright."""
    return any(segment in (".", "..") for segment in path.split("/"))


def parse_route_table(data: Any) -> RouteTable:
    """A table from the rendered JSON document (a bare list of routes is accepted too)."""
    if isinstance(data, list):
        data = {"routes": data}
    if not isinstance(data, dict):
        raise ValueError("the route table must be a JSON object with a 'routes' list")
    return RouteTable.model_validate(data)


def route_table_file(path: Path) -> Path:
    """``path`` itself, or ``routes.json`` inside it when it is the mounted folder."""
    return path / ROUTE_TABLE_FILE if path.is_dir() else path


def load_route_table(path: Path) -> RouteTable:
    """Read the table from ``path``, or from ``routes.json`` in the folder ``path``."""
    return parse_route_table(orjson.loads(route_table_file(path).read_bytes()))


def local_route_table(settings: GatewaySettings) -> RouteTable:
    """The platform's routes with every service on its local port: what the operator would
    render from ``manifests/samples`` (a test keeps the two in step), for local runs."""
    def route(prefix: str, service: str, url: str, methods: Iterable[str], *,
              auth: bool, per_minute: int | None) -> Route:
        return Route(path_prefix=prefix, methods=frozenset(methods), auth_required=auth,
                     rate_limit_per_minute=per_minute, service=service, upstream=url)

    read_write = ("GET", "POST", "PUT", "DELETE")
    every_write = ("GET", "POST", "PUT", "PATCH", "DELETE")
    user, product = settings.user_service_url, settings.product_service_url
    order, payment = settings.order_service_url, settings.payment_service_url
    return RouteTable(version="local", routes=(
        route("/api/auth", "user-service", user, ["POST"], auth=False, per_minute=20),
        route("/api/users", "user-service", user, every_write, auth=True, per_minute=100),
        route("/api/products", "product-service", product, read_write, auth=False,
              per_minute=100),
        route("/api/categories", "product-service", product, read_write, auth=False,
              per_minute=100),
        # No /api/inventory: reservations are the order saga's, service to service; a
        # shopper who could reach them could hold or sell a variant's whole stock.
        route("/api/search", "search-service", settings.search_service_url, ["GET"],
              auth=False, per_minute=100),
        route("/api/orders", "order-service", order, every_write, auth=True, per_minute=50),
        route("/api/cart", "order-service", order, every_write, auth=True, per_minute=100),
        route("/api/checkout", "order-service", order, ["POST"], auth=True, per_minute=50),
        route("/api/payments", "payment-service", payment, ["GET", "POST", "DELETE"],
              auth=True, per_minute=50),
        route("/api/webhooks/stripe", "payment-service", payment, ["POST"], auth=False,
              per_minute=None),
        route("/api/reviews", "review-service", settings.review_service_url, every_write,
              auth=False, per_minute=100),
        route("/api/shipments", "shipping-service", settings.shipping_service_url,
              ("GET", "POST"), auth=True, per_minute=100),
        route("/api/rates", "shipping-service", settings.shipping_service_url, ["POST"],
              auth=True, per_minute=100),
    ))
