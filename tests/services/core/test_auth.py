"""Tokens, passwords and the identity dependencies."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi import APIRouter

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
from services.core.errors import Unauthorized
from tests.services.support import running

from .conftest import make_settings

SETTINGS = make_settings()


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
    key = SETTINGS.jwt_secret.get_secret_value()
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "iss": "kommerce",
                        "type": "access"}, key, "HS256")  # no jti, no iat

    with pytest.raises(Unauthorized):
        TokenService(SETTINGS).verify(token)


async def test_passwords_hash_with_argon2id_and_verify() -> None:
    hashed = await hash_password("correct horse battery staple")

    assert hashed.startswith("$argon2id$")
    assert await verify_password(hashed, "correct horse battery staple")
    assert not await verify_password(hashed, "wrong")
    assert not await verify_password("not-a-hash", "anything")
    assert not password_needs_rehash(hashed)


def _identity_app(**settings: object):  # type: ignore[no-untyped-def]
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

    return create_service_app(make_settings(**settings), routers=[router], uses_database=False,
                              uses_redis=False, uses_bus=False)


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


async def test_gateway_headers_are_ignored_unless_trusted() -> None:
    headers = {"X-User-Id": "mallory", "X-User-Roles": "admin"}
    async with running(_identity_app()) as client:
        untrusted = await client.get("/admin", headers=headers)
    async with running(_identity_app(trust_gateway_headers=True)) as client:
        trusted = await client.get("/admin", headers=headers)

    assert untrusted.status_code == 401
    assert trusted.status_code == 200
    assert trusted.json() == {"user_id": "mallory"}
