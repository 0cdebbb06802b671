"""The gateway's one route: every ``/api/...`` request, whatever its method.

It asks :class:`~services.gateway.service.Gateway` for the route (404/405), the caller
(401) and the rate (429), then forwards with :mod:`services.gateway.proxy`. Errors are the
core's error model, so a shopper gets the same ``{"code", "message", "details"}`` from the
gateway as from any service.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from kommerce.contracts.route_table import KNOWN_METHODS
from services.core.app import get_runtime
from services.core.state import AppState
from services.gateway.proxy import (
    ProxiedResponse,
    client_response_headers,
    request_body,
    send_upstream,
    upstream_request_headers,
    upstream_target,
)
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings

#: nginx's code for "the client closed the connection before we answered"; only metrics
#: and the access log ever see it.
CLIENT_CLOSED_REQUEST = 499

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class _MetricsRoute:
    """Stands in for the matched route in the ASGI scope, where the core's metrics
    middleware reads its ``path``: request metrics are then labelled by route prefix
    (``/api/products``) instead of one catch-all template for every service."""

    path: str


#: Built with the app (see :mod:`.app`).
GATEWAY = AppState[Gateway]("gateway")


def get_gateway(request: Request) -> Gateway:
    return GATEWAY.of(request)


async def forward(request: Request) -> Response:
    """Route, authenticate, rate-limit and forward one request."""
    gateway = get_gateway(request)
    settings: GatewaySettings = gateway.settings
    scope = request.scope
    route = gateway.route_for(scope["path"])
    scope["route"] = _MetricsRoute(route.path_prefix)
    gateway.check_method(route, request.method)
    target = upstream_target(scope, settings.strip_path_prefix)
    address = request.client.host if request.client is not None else "unknown"
    caller = await gateway.identify(route, request.headers.get("authorization"), address)
    decision = await gateway.admit(route, caller)

    client = get_runtime(request).http.client(route.service, route.upstream)
    headers = upstream_request_headers(scope["headers"], caller, scheme=scope["scheme"],
                                       prefix=settings.strip_path_prefix)
    body = request_body(request, settings.max_request_body_bytes)
    timeout = gateway.timeout_for(route, scope["path"])
    try:
        upstream, release = await send_upstream(client, request.method, target, headers, body,
                                                timeout_seconds=timeout)
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    response_headers = client_response_headers(
        upstream, strip_cors=bool(settings.cors_origins),
        extra=decision.headers() if decision is not None else {})
    return ProxiedResponse(upstream, response_headers, release, route.service)


for _path in ("/api", "/api/{path:path}"):
    router.add_api_route(_path, forward, methods=list(KNOWN_METHODS), include_in_schema=False,
                         name="forward")
