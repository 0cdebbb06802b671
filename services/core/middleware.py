"""The one middleware every request passes: request id, access log and HTTP metrics.

These three used to be two middlewares, each wrapping ``send`` and timing the request; one
pure ASGI layer does it all in a single pass, which matters because on a cached read the
core's per-request work is most of what the service does (``bench/product_read.py``).

Per request it:

* takes the caller's ``X-Request-Id`` (if it cannot forge a log line) or makes one, binds it
  to the request's context so every log line carries it, and echoes it in the response;
* writes one access-log line (``kommerce.access``; probes and scrapes at DEBUG so they do not
  drown the real traffic), building the line's fields only when the level is enabled;
* observes ``http_request_duration_seconds`` and counts ``http_requests_total`` labelled by
  the route *template* the router matched, with the label children looked up once per
  (method, route, status) and kept, so a request costs two lock-protected adds.

It also answers **cached reads below FastAPI** (:class:`CachedRoute`): a ``GET`` of a route
registered as cached whose document is in the process's near cache is sent from here,
with the same headers, request id, access line and metrics (labelled by the route
template), skipping FastAPI's routing, dependency solving, exception layers and response
classes — three quarters of the CPU a warm read costs when it goes through them. Anything
else (not in the near cache, a malformed id, tracing on, a CORS request) goes through
FastAPI as before, so answers and errors do not change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.logging import (
    bind_request_id,
    log_access,
    reset_request_id,
    safe_request_id,
)
from services.core.metrics import HttpMetrics, route_template

_REQUEST_ID = b"x-request-id"
_COLOR = b"x-kommerce-color"
_ORIGIN = b"origin"
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class CachedRoute:
    """``GET <template>`` answered from the near cache when ``answer`` has the document.

    ``template`` ends in its one path parameter (``/products/{product_id}``); ``answer`` gets
    that parameter as sent and returns the JSON bytes the FastAPI route would send, or None
    to let the route answer (a near-cache miss, an id the route would reject). It must not
    block or raise: it runs for every such request, before any error handling.
    """

    template: str
    answer: Callable[[str], bytes | None]

    def __post_init__(self) -> None:
        if not (self.template.endswith("}") and self.template.count("{") == 1):
            raise ValueError(f"a cached route ends in its one parameter, not {self.template!r}")

    @property
    def prefix(self) -> str:
        return self.template[: self.template.index("{")]


class RequestObservationMiddleware:
    """Request id, access log and metrics for every HTTP request, in one pass; cached
    routes answered here when their documents are near (``cached_routes``; leave it empty
    when tracing is on, so every request gets its span)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics,
                 cached_routes: Sequence[CachedRoute] = (), cors: bool = False,
                 color: str = "") -> None:
        self.app = app
        # Which blue-green colour answered: what a flip under traffic is measured by.
        self.extra_headers = [(_COLOR, color.encode())] if color else []
        self.metrics = metrics
        self.cached_routes = [(route.prefix, route) for route in cached_routes]
        # With CORS on, a request carrying Origin goes through the CORS middleware.
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming_id, origin = _scan_headers(scope)
        request_id = incoming_id or _new_request_id()
        if self.cached_routes and scope["method"] == "GET" and not (self.cors and origin):
            body, template = self._cached(scope["path"])
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()), *_JSON_HEADERS,
                    (_REQUEST_ID, request_id.encode()), *self.extra_headers]})
                await send({"type": "http.response.body", "body": body})
                seconds = time.perf_counter() - started
                self.metrics.observe("GET", template, 200, seconds)
                token = bind_request_id(request_id)  # for the access line
                _log_access(scope, 200, seconds)
                reset_request_id(token)
                return
        token = bind_request_id(request_id)
        encoded_id = request_id.encode()
        extra_headers = self.extra_headers
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers") or []
                # The server-error handler quotes the id itself (it may run outside us).
                if status < 500 or all(name.lower() != _REQUEST_ID for name, _ in headers):
                    headers = [*headers, (_REQUEST_ID, encoded_id)]
                if extra_headers:
                    headers = [*headers, *extra_headers]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The id stays set: the server-error handler (outside us when tracing is on)
            # answers the 500 and quotes it (each request runs in its own task, so
            # nothing leaks).
            self._observe(scope, status, started)
            raise
        self._observe(scope, status, started)
        reset_request_id(token)

    def _cached(self, path: str) -> tuple[bytes | None, str]:
        for prefix, route in self.cached_routes:
            if path.startswith(prefix):
                parameter = path[len(prefix):]
                if parameter and "/" not in parameter:
                    return route.answer(parameter), route.template
        return None, ""

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.observe(scope["method"], route_template(scope), status, seconds)
        _log_access(scope, status, seconds)


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    log_access(scope["method"], scope["path"], status, seconds)


class _RandomIds:
    """32 hex digits of ``os.urandom`` per id, like ``uuid4().hex`` but drawn from a block
    of random bytes fetched 1024 ids at a time: one system call per thousand requests
    instead of one per request."""

    _BLOCK = 16 * 1024

    def __init__(self) -> None:
        self._random = b""
        self._offset = self._BLOCK

    def __call__(self) -> str:
        if self._offset >= self._BLOCK:
            self._random, self._offset = os.urandom(self._BLOCK), 0
        offset = self._offset
        self._offset = offset + 16
        return self._random[offset:offset + 16].hex()


_new_request_id = _RandomIds()


def _scan_headers(scope: Scope) -> tuple[str | None, bool]:
    """The caller's request id if usable, and whether the request carries Origin."""
    request_id: str | None = None
    origin = False
    for name, value in scope["headers"]:
        if name == _REQUEST_ID:
            request_id = safe_request_id(value.decode("latin-1"))
        elif name == _ORIGIN:
            origin = True
    return request_id, origin
