"""Tokens, passwords and the identity dependencies."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import pytest
from fastapi import APIRouter
from pydantic import ValidationError
from redis.asyncio import Redis

from services.core.app import create_service_app
from services.core.auth import (
    AdminUser,
    CurrentUser,
    OptionalUser,
    TokenService,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from services.core.errors import ServiceUnavailable, Unauthorized
from services.core.hashing import PasswordHashPool
from services.core.revocation import RevocationList
from services.core.signing import (
    DEVELOPMENT_KEY_ID,
    DEVELOPMENT_KEY_PEM,
    generate_private_key_pem,
    jwks_document,
    load_private_key,
)
from tests.services.support import running

from .conftest import make_settings

if TYPE_CHECKING:
    from kommerce.testbed.redis import RedisServer

SETTINGS = make_settings()

#: A platform's keys: the user service's and the order service's own.
USER_KEY = generate_private_key_pem()
ORDER_KEY = generate_private_key_pem()
JWKS = json.dumps(jwks_document({"user": USER_KEY, "service:order": ORDER_KEY}))
USER = make_settings(service_name="user", jwt_private_key=USER_KEY, jwt_jwks=JWKS)
ORDER = make_settings(service_name="order", jwt_private_key=ORDER_KEY, jwt_jwks=JWKS)
PRODUCT = make_settings(service_name="product-service", jwt_jwks=JWKS)
PAYMENT = make_settings(service_name="payment", jwt_jwks=JWKS)


def test_access_token_round_trip_carries_subject_roles_and_required_claims() -> None:
    tokens = TokenService(SETTINGS)
    issued = tokens.issue_access("user-1", roles=["customer", "admin"])

    claims = tokens.verify(issued.token)

    assert claims.sub == "user-1"
    assert claims.roles == ["admin", "customer"]
    assert claims.type == "access"
    assert claims.iss == "kommerce"
    assert claims.exp - claims.iat == 15 * 60
    assert issued.expires_in == 900


def test_each_token_gets_its_own_jti() -> None:
    tokens = TokenService(SETTINGS)

    assert tokens.issue_access("u").claims.jti != tokens.issue_access("u").claims.jti


def test_refresh_tokens_last_seven_days_and_keep_their_family() -> None:
    tokens = TokenService(SETTINGS)
    first = tokens.issue_refresh("user-1")
    rotated = tokens.issue_refresh("user-1", family=first.claims.fam)

    claims = tokens.verify(rotated.token, "refresh")

    assert claims.exp - claims.iat == 7 * 24 * 3600
    assert claims.fam == first.claims.fam


def test_a_refresh_token_is_not_an_access_token_nor_the_reverse() -> None:
    tokens = TokenService(SETTINGS)

    with pytest.raises(Unauthorized) as refused:
        tokens.verify(tokens.issue_refresh("u").token, "access")
    assert refused.value.code == "wrong_token_type"
    with pytest.raises(Unauthorized):
        tokens.verify(tokens.issue_access("u").token, "refresh")


def test_expired_tokens_are_rejected() -> None:
    issued_long_ago = TokenService(SETTINGS, clock=lambda: time.time() - 3600)
    token = issued_long_ago.issue_access("u").token

    with pytest.raises(Unauthorized) as refused:
        TokenService(SETTINGS).verify(token)

    assert refused.value.code == "token_expired"


def test_tampered_tokens_are_rejected() -> None:
    tokens = TokenService(SETTINGS)
    header, payload, signature = tokens.issue_access("u").token.split(".")
    forged = jwt.encode({**jwt.decode(f"{header}.{payload}.{signature}",
                                      options={"verify_signature": False}),
                         "roles": ["admin"]}, "another-key-of-at-least-32-bytes!!", "HS256")

    for bad in (forged, f"{header}.{payload}.{signature[:-4]}AAAA", "not-a-jwt"):
        with pytest.raises(Unauthorized) as refused:
            tokens.verify(bad)
        assert refused.value.code == "token_invalid"


def test_tokens_from_another_issuer_are_rejected() -> None:
    other = TokenService(make_settings(jwt_issuer="someone-else"))

    with pytest.raises(Unauthorized):
        TokenService(SETTINGS).verify(other.issue_access("u").token)


def test_tokens_without_the_required_claims_are_rejected() -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "iss": "kommerce",
                        "type": "access", "aud": "kommerce"},
                       load_private_key(DEVELOPMENT_KEY_PEM), "EdDSA",
                       headers={"kid": DEVELOPMENT_KEY_ID})  # no jti, no iat

    with pytest.raises(Unauthorized):
        TokenService(SETTINGS).verify(token)


# -- keys and what each may sign ---------------------------------------------------------


def _signed(pem: str, kid: str, **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "u", "type": "access", "jti": "j", "iat": now, "exp": now + 60,
            "iss": "kommerce", "aud": "kommerce", "roles": [], **claims}
    return jwt.encode(body, load_private_key(pem), "EdDSA", headers={"kid": kid})


def test_user_tokens_are_verified_with_the_public_key_alone() -> None:
    issued = TokenService(USER).issue_access("user-1", ["admin"], session="s-1")

    claims = TokenService(PRODUCT).verify(issued.token)

    assert (claims.sub, claims.roles, claims.sid, claims.aud) == (
        "user-1", ["admin"], "s-1", "kommerce")
    with pytest.raises(RuntimeError, match="no signing key"):
        TokenService(PRODUCT).issue_access("user-1", ["admin"])


def test_a_service_key_issues_only_its_own_identity() -> None:
    order = TokenService(ORDER)

    with pytest.raises(ValueError, match="service:order"):
        order.issue_access("user-1", ["admin"])
    with pytest.raises(ValueError):
        order.issue_access("service:order", ["service", "admin"], audience="product")
    issued = order.issue_service("product")

    claims = TokenService(PRODUCT).verify(issued.token)

    assert (claims.sub, claims.roles, claims.aud) == ("service:order", ["service"], "product")


@pytest.mark.parametrize("claims", [
    {"sub": "admin-1", "roles": ["admin"], "aud": "product"},
    {"sub": "service:user", "roles": ["service"], "aud": "product"},
    {"sub": "service:order", "roles": ["service", "admin"], "aud": "product"},
    {"sub": "service:order", "roles": ["service"], "aud": "kommerce"},
    {"sub": "service:order", "roles": ["service"], "aud": ["product", "kommerce"]},
], ids=["admin", "other_service", "extra_role", "api_audience", "two_audiences"])
def test_a_token_forged_with_a_service_key_is_refused(claims: dict[str, object]) -> None:
    token = _signed(ORDER_KEY, "service:order", **claims)

    with pytest.raises(Unauthorized) as refused:
        TokenService(PRODUCT).verify(token)

    assert refused.value.code in ("token_invalid", "token_wrong_audience")


def test_a_service_token_is_good_only_at_the_service_it_names() -> None:
    token = TokenService(ORDER).issue_service("product").token

    with pytest.raises(Unauthorized) as refused:
        TokenService(PAYMENT).verify(token)

    assert refused.value.code == "token_wrong_audience"


def test_a_user_key_cannot_assert_a_service_identity() -> None:
    for claims in ({"roles": ["service"]}, {"sub": "service:order"}):
        with pytest.raises(Unauthorized):
            TokenService(PRODUCT).verify(_signed(USER_KEY, "user", **claims))


def test_tokens_for_another_audience_or_from_an_unknown_key_are_refused() -> None:
    elsewhere = _signed(USER_KEY, "user", aud="another-shop")
    unknown = _signed(generate_private_key_pem(), "user")
    development = TokenService(SETTINGS).issue_access("u", ["admin"]).token
    refresh = TokenService(USER).issue_refresh("u").token

    with pytest.raises(Unauthorized) as wrong_audience:
        TokenService(PRODUCT).verify(elsewhere)
    for token in (unknown, development):
        with pytest.raises(Unauthorized) as untrusted:
            TokenService(PRODUCT).verify(token)
        assert untrusted.value.code == "token_invalid"
    with pytest.raises(Unauthorized):  # refresh tokens are the user service's alone
        TokenService(PRODUCT).verify(refresh, "refresh")

    assert wrong_audience.value.code == "token_wrong_audience"
    assert TokenService(USER).verify(refresh, "refresh").sub == "u"


def test_production_needs_the_trusted_keys_and_refuses_the_development_key() -> None:
    with pytest.raises(ValidationError, match="JWT_JWKS must be set"):
        make_settings(environment="production")
    with_development = json.dumps(jwks_document({DEVELOPMENT_KEY_ID: DEVELOPMENT_KEY_PEM}))
    with pytest.raises(ValueError, match="development"):
        TokenService(make_settings(environment="production", jwt_jwks=with_development))
    with pytest.raises(ValidationError, match="no longer used"):
        make_settings(jwt_secret="a-shared-secret-of-at-least-32-characters")

    TokenService(make_settings(environment="production", jwt_jwks=JWKS))


@pytest.mark.parametrize("jwks", ['{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}',
                                  '{"keys": [{"kty": "OKP"}]}', "[]", "/nonexistent/jwks.json"])
def test_a_bad_jwks_is_refused_at_start(jwks: str) -> None:
    with pytest.raises(ValueError):
        TokenService(make_settings(jwt_jwks=jwks))


def test_the_jwks_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(JWKS)

    claims = TokenService(make_settings(service_name="product", jwt_jwks=str(path))).verify(
        TokenService(USER).issue_access("u").token)

    assert claims.sub == "u"


async def test_passwords_hash_with_argon2id_and_verify() -> None:
    hashed = await hash_password("correct horse battery staple")

    assert hashed.startswith("$argon2id$")
    assert await verify_password(hashed, "correct horse battery staple")
    assert not await verify_password(hashed, "wrong")
    assert not await verify_password("not-a-hash", "anything")
    assert not password_needs_rehash(hashed)


async def test_password_hashing_refuses_with_503_once_its_queue_is_full() -> None:
    pool = PasswordHashPool(workers=1, queue_limit=1, max_wait_seconds=30)
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    release = threading.Event()

    def blocked() -> str:
        loop.call_soon_threadsafe(gate.set)
        release.wait(10)
        return "done"

    running_hash = asyncio.create_task(pool.run(blocked))
    await gate.wait()
    waiting = asyncio.create_task(pool.run(lambda: "queued"))
    await asyncio.sleep(0)
    with pytest.raises(ServiceUnavailable) as refused:
        await pool.run(lambda: "one too many")
    release.set()

    assert await running_hash == "done" and await waiting == "queued"
    assert refused.value.code == "password_hashing_busy"
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert await pool.run(lambda: "room again") == "room again"
    pool.shutdown()


async def test_a_hash_that_waited_too_long_is_answered_503_instead_of_run() -> None:
    pool = PasswordHashPool(workers=1, queue_limit=4, max_wait_seconds=0.2)
    ran: list[str] = []

    first = asyncio.create_task(pool.run(lambda: time.sleep(0.5)))
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceUnavailable) as refused:
        await pool.run(lambda: ran.append("late"))
    await first

    assert refused.value.code == "password_hashing_busy"
    assert ran == []
    pool.shutdown()


def _identity_app(**settings: object):  # type: ignore[no-untyped-def]
    return create_service_app(make_settings(**settings), routers=[_identity_router()],
                              uses_database=False, uses_redis=False, uses_bus=False)


def _identity_router() -> APIRouter:
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict[str, object]:
        return {"user_id": user.user_id, "roles": sorted(user.roles)}

    @router.get("/maybe")
    async def maybe(user: OptionalUser) -> dict[str, object]:
        return {"user_id": user.user_id if user else None}

    @router.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"user_id": user.user_id}

    return router


async def test_current_user_reads_the_bearer_token() -> None:
    tokens = TokenService(SETTINGS)
    async with running(_identity_app()) as client:
        token = tokens.issue_access("user-7", roles=["customer"]).token
        response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert response.json() == {"user_id": "user-7", "roles": ["customer"]}


async def test_anonymous_and_badly_authenticated_requests_get_401_with_the_error_model() -> None:
    async with running(_identity_app()) as client:
        anonymous = await client.get("/me")
        garbage = await client.get("/me", headers={"Authorization": "Bearer nope"})
        wrong_scheme = await client.get("/me", headers={"Authorization": "Basic dTpw"})
        maybe = await client.get("/maybe")

    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert garbage.status_code == 401
    assert garbage.json()["code"] == "token_invalid"
    assert wrong_scheme.status_code == 401
    assert maybe.json() == {"user_id": None}


async def test_require_role_admits_admins_only() -> None:
    tokens = TokenService(SETTINGS)
    async with running(_identity_app()) as client:
        customer = tokens.issue_access("c", roles=["customer"]).token
        admin = tokens.issue_access("a", roles=["admin"]).token
        refused = await client.get("/admin", headers={"Authorization": f"Bearer {customer}"})
        admitted = await client.get("/admin", headers={"Authorization": f"Bearer {admin}"})

    assert refused.status_code == 403
    assert refused.json()["code"] == "missing_role"
    assert admitted.status_code == 200


@pytest.mark.redis
async def test_a_service_refuses_a_revoked_bearer_token_itself(
        redis_server: RedisServer) -> None:
    settings = make_settings(redis_url=redis_server.url,
                             token_revocation_prefix=f"revoked-{time.time_ns()}:")
    app = create_service_app(settings, routers=[_identity_router()], uses_database=False,
                             uses_bus=False)
    tokens = TokenService(settings)
    ended = tokens.issue_access("user-7", ["customer"], session="ended-session")
    logged_out = tokens.issue_access("user-7", ["customer"], session="live-session")
    live = tokens.issue_access("user-7", ["customer"], session="live-session")
    redis = Redis.from_url(redis_server.url)
    revocations = RevocationList(redis, prefix=settings.token_revocation_prefix,
                                 timeout_seconds=1)
    try:
        await revocations.end_sessions(["ended-session"], 60)
        await revocations.revoke_token(logged_out.claims.jti, logged_out.claims.exp)
    finally:
        await redis.aclose()

    async with running(app) as client:
        answers = {name: await client.get("/me", headers={
            "Authorization": f"Bearer {issued.token}"})
            for name, issued in {"ended": ended, "logged_out": logged_out,
                                 "live": live}.items()}

    assert answers["ended"].status_code == answers["logged_out"].status_code == 401
    assert answers["ended"].json()["code"] == "token_revoked"
    assert answers["live"].status_code == 200


async def test_gateway_headers_are_ignored_unless_trusted() -> None:
    headers = {"X-User-Id": "mallory", "X-User-Roles": "admin"}
    async with running(_identity_app()) as client:
        untrusted = await client.get("/admin", headers=headers)
    async with running(_identity_app(trust_gateway_headers=True)) as client:
        trusted = await client.get("/admin", headers=headers)

    assert untrusted.status_code == 401
    assert trusted.status_code == 200
    assert trusted.json() == {"user_id": "mallory"}
