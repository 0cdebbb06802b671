"""Only verified callers reach protected routes, and services learn who they are from the
gateway alone."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from services.core.auth import TokenService
from services.core.revocation import RevocationList
from services.core.signing import DEVELOPMENT_KEY_ID, generate_private_key_pem
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
                                  "basic_scheme", "other_audience"])
async def test_a_bad_token_is_401_with_a_reason(
        gateway: RunningGateway, echo_a: Echo, kind: str) -> None:
    tokens = gateway.tokens()
    good = tokens.issue_access("user-9", ["customer"]).token
    # Another key under the trusted key's id: the signature is what is checked.
    other = TokenService(GatewaySettings(jwt_private_key=generate_private_key_pem(),
                                         jwt_key_id=DEVELOPMENT_KEY_ID))
    past = TokenService(gateway.settings, clock=lambda: time.time() - 3600)
    header = {
        "tampered": "Bearer " + good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "expired": "Bearer " + past.issue_access("user-9").token,
        "other_key": "Bearer " + other.issue_access("user-9").token,
        "refresh": "Bearer " + tokens.issue_refresh("user-9").token,
        "garbage": "Bearer not-a-jwt",
        "basic_scheme": "Basic dXNlcjpwYXNz",
        "other_audience": "Bearer " + tokens.issue_access("user-9", audience="payment").token,
    }[kind]
    path = f"/api/account/{kind}"

    response = await gateway.client.get(path, headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["code"] == {
        "expired": "token_expired", "refresh": "wrong_token_type",
        "other_audience": "token_wrong_audience"}.get(kind, "token_invalid")
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


async def test_a_revoked_token_is_refused_at_once_and_an_ended_session_with_it(
        gateway: RunningGateway, echo_a: Echo) -> None:
    tokens = gateway.tokens()
    logged_out = tokens.issue_access("user-10", ["customer"], session="session-a")
    same_session = tokens.issue_access("user-10", ["customer"], session="session-a")
    other_session = tokens.issue_access("user-10", ["customer"], session="session-b")
    redis = Redis.from_url(gateway.settings.redis_url)
    revocations = RevocationList(redis, prefix=gateway.settings.token_revocation_prefix,
                                 timeout_seconds=1)
    before = await gateway.client.get("/api/account/revoked", headers={
        "Authorization": f"Bearer {logged_out.token}"})
    try:
        await revocations.revoke_token(logged_out.claims.jti, logged_out.claims.exp)
        await revocations.end_sessions(["session-a"], 60)
    finally:
        await redis.aclose()

    answers = {name: await gateway.client.get("/api/account/revoked", headers={
        "Authorization": f"Bearer {issued.token}"}) for name, issued in
        {"logged_out": logged_out, "same_session": same_session,
         "other_session": other_session}.items()}

    assert before.status_code == 200
    assert answers["logged_out"].status_code == 401
    assert answers["logged_out"].json()["code"] == "token_revoked"
    assert answers["same_session"].json()["code"] == "token_revoked"
    assert answers["other_session"].status_code == 200
    assert echo_a.hits["/account/revoked"] == 2


async def test_the_auth_route_waits_longer_than_the_breaker_timeout(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    # svc-slow's breaker gives up after 0.5 s; the auth route's own timeout is longer, as
    # password hashing on a loaded machine is.
    gateway = await start_gateway(
        [route("/api/auth", echo_a.url, service="svc-slow"),
         route("/api/users", echo_a.url, service="svc-slow")],
        auth_route_timeout_seconds=5)

    login = await gateway.client.post("/api/auth/login?sleep=1.5")
    password = await gateway.client.post("/api/users/me/password?sleep=1.5")
    other = await gateway.client.post("/api/users/me/addresses?sleep=1.5")

    assert login.status_code == 200, login.text
    assert password.status_code == 200, password.text
    assert other.status_code == 504


def test_the_auth_route_timeout_follows_the_hash_wait() -> None:
    assert GatewaySettings(password_hash_max_wait_seconds=8).auth_timeout_seconds == 21
    assert GatewaySettings(password_hash_max_wait_seconds=20).auth_timeout_seconds == 45
    assert GatewaySettings(auth_route_timeout_seconds=7).auth_timeout_seconds == 7
