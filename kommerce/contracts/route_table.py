"""The gateway's route table: which service serves a path, with which methods, auth and limit.

Why a contract: the CommerceService operator writes this document into the ConfigMap
``kommerce-gateway-routes`` from every service's ``spec.routes``, and the gateway mounts,
hot-reloads and matches requests against it. Both import :class:`Route` and
:class:`RouteTable` from here, so the operator cannot write a field the gateway does not
read, and a test renders the operator's table and parses it with the gateway's loader::

    {"version": "3f2a9c0d1e7b4a55",
     "routes": [{"pathPrefix": "/api/products", "methods": ["GET", "POST"],
                 "authRequired": false, "rateLimitPerMinute": 100,
                 "service": "product-service", "component": "product",
                 "upstream": "http://product-service.shop.svc.cluster.local:80"}]}

``version`` is a hash of the routes (:func:`content_version`), which the gateway logs when
it takes a new table into force. Keys are camelCase as written; snake_case is accepted, and
keys the gateway does not know are ignored so the operator may add one before every gateway
reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from kommerce.contracts.release import Color

#: The ConfigMap the operator writes and the gateway's Pods mount.
ROUTE_TABLE_CONFIGMAP = "kommerce-gateway-routes"
#: The file (ConfigMap key) holding the table.
ROUTE_TABLE_KEY = "routes.json"
#: Annotation on the ConfigMap repeating the table's version, for ``kubectl get -o yaml``.
ROUTE_TABLE_VERSION_ANNOTATION = "kommerce.io/route-table-version"

#: Methods a route may list, in the order the table lists them and a 405 names them.
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALL_METHODS = frozenset(KNOWN_METHODS)

#: What a host may be spelt with (names, IPv4, IPv6 without its brackets).
_HOST = re.compile(r"^[-A-Za-z0-9._:%]+$")


def has_dot_segment(path: str) -> bool:
    """Whether ``path`` holds a ``.`` or ``..`` segment.

    Such a path would be matched as written but resolved by an HTTP library or server
    further on (``/api/products/../users`` → ``/api/users``), slipping past the auth rule of
    the route it really reaches, so the gateway refuses them outright."""
    return any(segment in (".", "..") for segment in path.split("/"))


def _base_url(value: str) -> str:
    """``value`` as an http(s) base URL without path, query or fragment, or ValueError."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises ValueError for a port that is not one
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a URL: {value!r}") from exc
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"upstream must be an http(s) URL with a host, not {value!r}")
    if not _HOST.match(url.hostname):
        raise ValueError(f"not a URL: {value!r}")
    if url.query or url.fragment or url.path not in ("", "/"):
        raise ValueError(f"upstream must be a base URL without path or query: {value!r}")
    return value.rstrip("/")


class Route(BaseModel):
    """One entry of the table.

    ``methods`` holds the methods the route declares; :meth:`allows` also lets HEAD through
    where GET is declared (HEAD is GET without a body, RFC 9110 §9.3.2)."""

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
    component: str | None = Field(
        None, description="The service's component (product, order, ...); informational.")
    active_color: Color | None = Field(
        None, description="The colour serving it while a blue-green rollout carries its "
        "traffic; a flip changes the table's version, so the gateway's log shows it.")
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
            return methods
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
        return _base_url(value)

    @property
    def served_methods(self) -> frozenset[str]:
        """The declared methods, with HEAD where GET is declared."""
        return self.methods | {"HEAD"} if "GET" in self.methods else self.methods

    def covers(self, path: str) -> bool:
        """Whether ``path`` is this prefix or lies below it."""
        prefix = self.path_prefix
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")

    def allows(self, method: str) -> bool:
        return method in self.served_methods

    def allowed_methods(self) -> list[str]:
        return [method for method in KNOWN_METHODS if method in self.served_methods]

    def wire(self) -> dict[str, Any]:
        """The entry as the operator writes it (``null`` for no rate limit; the optional
        keys only when set)."""
        entry: dict[str, Any] = {
            "pathPrefix": self.path_prefix,
            "methods": [method for method in KNOWN_METHODS if method in self.methods],
            "authRequired": self.auth_required,
            "rateLimitPerMinute": self.rate_limit_per_minute,
            "service": self.service,
            "upstream": self.upstream,
        }
        if self.component is not None:
            entry["component"] = self.component
        if self.active_color:
            # str(): the writer builds routes unvalidated (model_construct), with the value
            entry["activeColor"] = str(self.active_color)
        if self.timeout_seconds is not None:
            entry["timeoutSeconds"] = self.timeout_seconds
        return entry


def _longest_first(routes: Iterable[Route]) -> tuple[Route, ...]:
    return tuple(sorted(routes, key=lambda r: (-len(r.path_prefix), r.path_prefix)))


def content_version(routes: Sequence[Route]) -> str:
    """The table's version: a hash of its entries as written, so any change to a route
    (a flip of its colour included) gives a new one and nothing else does."""
    body = json.dumps([route.wire() for route in routes], sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


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
        return _longest_first(routes)

    @classmethod
    def written(cls, routes: Iterable[Route]) -> RouteTable:
        """The table the operator writes: ``routes`` longest prefix first, versioned by
        their content. Not validated again: the routes come from specs the apiserver
        checked, and a table the gateway refuses leaves the one in force (as any bad file
        does), so the operator never has to stop publishing over one service."""
        ordered = _longest_first(routes)
        return cls.model_construct(version=content_version(ordered), routes=ordered)

    def match(self, path: str) -> Route | None:
        """The route with the longest prefix covering ``path``, if any."""
        for route in self.routes:
            if route.covers(path):
                return route
        return None

    def wire(self) -> dict[str, Any]:
        return {"version": self.version, "routes": [route.wire() for route in self.routes]}

    def to_json(self) -> str:
        """The ConfigMap's file content."""
        return json.dumps(self.wire(), sort_keys=True, indent=2) + "\n"


def parse_route_table(data: Any) -> RouteTable:
    """A table from the parsed JSON document (a bare list of routes is accepted too);
    ValueError (a pydantic ValidationError) naming the first problems otherwise."""
    if isinstance(data, list):
        data = {"routes": data}
    if not isinstance(data, dict):
        raise ValueError("the route table must be a JSON object with a 'routes' list")
    return RouteTable.model_validate(data)
