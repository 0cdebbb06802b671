"""CORS is decided at the gateway, from its settings: preflights never reach a service."""

from __future__ import annotations

import pytest

from .conftest import ALLOWED_ORIGIN, Echo, StartGateway, route

pytestmark = pytest.mark.redis


async def test_a_preflight_is_answered_by_the_gateway(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/orders", echo_a.url, auth=True, per_minute=1)])
    preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}

    responses = [await gateway.client.options("/api/orders/new", headers=preflight)
                 for _ in range(3)]

    for response in responses:  # no token needed, and not counted against the limit
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert echo_a.hits["/orders/new"] == 0


async def test_a_preflight_from_an_unknown_origin_is_refused(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/orders", echo_a.url)])

    response = await gateway.client.options(
        "/api/orders/new", headers={"Origin": "https://evil.example",
                                    "Access-Control-Request-Method": "POST"})

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_responses_carry_the_gateways_cors_headers_not_the_services(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/catalog", echo_a.url, per_minute=10)])

    allowed = await gateway.client.get("/api/catalog/1?cors=1",
                                       headers={"Origin": ALLOWED_ORIGIN})
    foreign = await gateway.client.get("/api/catalog/1?cors=1",
                                       headers={"Origin": "https://evil.example"})

    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "retry-after" in allowed.headers["access-control-expose-headers"].lower()
    # the service said "*"; the gateway's rule stands
    assert "access-control-allow-origin" not in foreign.headers


async def test_errors_from_the_gateway_carry_cors_headers_too(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    """A browser can only read a 401 or 429 it is allowed to see."""
    gateway = await start_gateway([route("/api/account", echo_a.url, auth=True)])

    response = await gateway.client.get("/api/account/me", headers={"Origin": ALLOWED_ORIGIN})

    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
