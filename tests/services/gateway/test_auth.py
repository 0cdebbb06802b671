"""Only verified callers reach protected routes, and services learn who they are from the
gateway alone."""

from __future__ import annotations

import time

import pytest

from services.core.auth import TokenService
from services.gateway.settings import GatewaySettings

from .conftest import Echo, RunningGateway, StartGateway, route

pytestmark = pytest.mark.redis


@pytest.fixture
async def gateway(start_gateway: StartGateway, echo_a: Echo) -> RunningGateway:
    return await start_gateway([route("/api/account", echo_a.url, auth=True),
                                route("/api/catalog", echo_a.url, auth=False)])


def seen(response_json: dict[str, object], name: str) -> list[str]:
    headers = response_json["headers"]
    assert isinstance(headers, list)
    return [value for key, value in headers if key == name]


async def test_a_protected_route_without_a_token_is_401(
        gateway: RunningGateway, echo_a: Echo) -> None:
    response = await gateway.client.get("/api/account/anon")

    assert response.status_code == 401
    assert response.json()["code"] == "token_missing"
    assert response.headers["www-authenticate"] == "Bearer"
    assert echo_a.hits["/account/anon"] == 0


async def test_a_valid_token_passes_and_the_service_sees_the_user(
        gateway: RunningGateway) -> None:
    response = await gateway.client.get(
        "/api/account/me", headers=gateway.bearer("user-7", ("customer", "admin")))

    assert response.status_code == 200
    assert seen(response.json(), "x-user-id") == ["user-7"]
    assert seen(response.json(), "x-user-roles") == ["admin,customer"]
    assert len(seen(response.json(), "authorization")) == 1  # passed on for services


async def test_identity_headers_from_the_client_never_reach_the_service(
        gateway: RunningGateway) -> None:
    forged = {"X-User-Id": "admin-0", "X-User-Roles": "admin"}

    with_token = await gateway.client.get(
        "/api/account/me", headers={**forged, **gateway.bearer("user-8", ())})
    anonymous = await gateway.client.get("/api/catalog/items", headers=forged)

    assert seen(with_token.json(), "x-user-id") == ["user-8"]
    assert seen(with_token.json(), "x-user-roles") == [""]
    assert seen(anonymous.json(), "x-user-id") == []
    assert seen(anonymous.json(), "x-user-roles") == []


@pytest.mark.parametrize("kind", ["tampered", "expired", "other_key", "refresh", "garbage",
                                  "basic_scheme"])
async def test_a_bad_token_is_401_with_a_reason(
        gateway: RunningGateway, echo_a: Echo, kind: str) -> None:
    tokens = gateway.tokens()
    good = tokens.issue_access("user-9", ["customer"]).token
    other = TokenService(GatewaySettings(jwt_secret="another-secret-of-at-least-32-chars!!"))
    past = TokenService(gateway.settings, clock=lambda: time.time() - 3600)
    header = {
        "tampered": "Bearer " + good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "expired": "Bearer " + past.issue_access("user-9").token,
        "other_key": "Bearer " + other.issue_access("user-9").token,
        "refresh": "Bearer " + tokens.issue_refresh("user-9").token,
        "garbage": "Bearer not-a-jwt",
        "basic_scheme": "Basic dXNlcjpwYXNz",
    }[kind]
    path = f"/api/account/{kind}"

    response = await gateway.client.get(path, headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["code"] == {"expired": "token_expired",
                                       "refresh": "wrong_token_type"}.get(kind, "token_invalid")
    assert echo_a.hits[path.removeprefix("/api")] == 0


async def test_public_routes_pass_anonymous_callers_and_identify_signed_in_ones(
        gateway: RunningGateway) -> None:
    anonymous = await gateway.client.get("/api/catalog/1")
    signed_in = await gateway.client.get("/api/catalog/1", headers=gateway.bearer("user-3"))
    expired = await gateway.client.get(
        "/api/catalog/1", headers={"Authorization": "Bearer " + TokenService(
            gateway.settings, clock=lambda: time.time() - 3600).issue_access("u").token})

    assert anonymous.status_code == 200
    assert seen(signed_in.json(), "x-user-id") == ["user-3"]
    # a token that is sent must be good, so the client refreshes instead of silently
    # browsing as a stranger
    assert expired.status_code == 401
    assert expired.json()["code"] == "token_expired"
