"""Registration, login, refresh-token rotation with reuse detection, logout, bad tokens."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from sqlalchemy import select

from services.core.auth import TokenService
from services.user.models import RefreshFamily
from tests.services.support import unique

from .conftest import PASSWORD, Service, bearer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_register_normalises_the_email_and_never_returns_the_password(
    service: Service,
) -> None:
    local = unique("Ada")
    user = await service.register(f"  {local}@Example.COM ", full_name="Ada Lovelace")

    assert user["email"] == f"{local.lower()}@example.com"
    assert user["roles"] == ["customer"]
    assert user["full_name"] == "Ada Lovelace"
    assert user["preferences"] == {"currency": "USD", "language": "en",
                                   "marketing_opt_in": False}
    assert "password" not in json.dumps(user)


async def test_registering_an_email_twice_in_any_case_is_a_conflict(service: Service) -> None:
    email = f"{unique('dup')}@example.com"
    await service.register(email)

    again = await service.client.post("/auth/register",
                                      json={"email": email.upper(), "password": PASSWORD})

    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "not-an-email", "password": PASSWORD}, "email"),
    ({"email": "a@localhost", "password": PASSWORD}, "email"),
    ({"email": "ok@example.com", "password": "short1"}, "password"),
    ({"email": "ok@example.com", "password": "onlyletterslong"}, "password"),
    ({"email": "ok@example.com", "password": "Password123"}, "password"),
    ({"email": "ok@example.com", "password": "x" * 129 + "1"}, "password"),
    ({"email": "ok@example.com", "password": PASSWORD, "is_admin": True}, "is_admin"),
    ({"email": "ok@example.com", "password": PASSWORD, "full_name": "tab\there"}, "full_name"),
])
async def test_registration_input_that_breaks_a_rule_is_a_422_naming_the_field(
    service: Service, body: dict[str, object], field: str,
) -> None:
    response = await service.client.post("/auth/register", json=body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["code"] == "validation_error"
    assert any(field in detail["loc"] for detail in payload["details"]), payload


async def test_a_password_containing_the_email_name_is_refused(service: Service) -> None:
    name = unique("margaret")
    response = await service.client.post("/auth/register", json={
        "email": f"{name}@example.com", "password": f"{name}-2024!"})

    assert response.status_code == 422
    assert "email" in response.text


async def test_login_with_a_wrong_password_or_unknown_email_says_the_same(
    service: Service,
) -> None:
    user = await service.register()
    async with service.client_at("10.1.0.1") as client:
        wrong = await client.post("/auth/login", json={"email": user["email"],
                                                       "password": "wrong-password-1"})
        unknown = await client.post("/auth/login", json={
            "email": f"{unique('nobody')}@example.com", "password": PASSWORD})

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"


async def test_login_issues_a_15_minute_access_token_and_a_7_day_refresh_token(
    service: Service,
) -> None:
    user = await service.register()
    tokens = await service.login(user["email"].upper())

    tokens_service = TokenService(service.settings)
    access = tokens_service.verify(tokens["access_token"], "access")
    refresh = tokens_service.verify(tokens["refresh_token"], "refresh")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == access.exp - access.iat == 15 * 60
    assert tokens["refresh_expires_in"] == refresh.exp - refresh.iat == 7 * 24 * 3600
    assert access.sub == refresh.sub == user["id"]
    assert access.roles == ["customer"]
    me = await service.client.get("/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user["id"]


async def test_refresh_rotates_and_reusing_a_spent_token_revokes_the_whole_family(
    service: Service,
) -> None:
    user = await service.register()
    first = await service.login(user["email"])

    rotated = await service.client.post("/auth/refresh",
                                        json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await service.client.get("/users/me", headers=bearer(second["access_token"]))
            ).status_code == 200

    # Someone replays the spent token: the thief or the user, we cannot tell which...
    replay = await service.client.post("/auth/refresh",
                                       json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["code"] == "refresh_token_reused"

    # ...so the token the legitimate holder has now is dead too: the family is revoked.
    after = await service.client.post("/auth/refresh",
                                      json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401
    assert after.json()["code"] == "session_revoked"

    async with service.database.session() as session:
        family = await session.scalar(select(RefreshFamily).where(
            RefreshFamily.id == TokenService(service.settings).verify(
                first["refresh_token"], "refresh").fam))
    assert family is not None and family.revoked_reason == "reuse"


async def test_reuse_revokes_only_that_family_not_the_users_other_sessions(
    service: Service,
) -> None:
    user = await service.register()
    phone = await service.login(user["email"])
    laptop = await service.login(user["email"])
    await service.client.post("/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    await service.client.post("/auth/refresh", json={"refresh_token": phone["refresh_token"]})

    still = await service.client.post("/auth/refresh",
                                      json={"refresh_token": laptop["refresh_token"]})

    assert still.status_code == 200


async def test_concurrent_refreshes_of_one_token_rotate_at_most_once(service: Service) -> None:
    import asyncio

    user = await service.register()
    tokens = await service.login(user["email"])
    body = {"refresh_token": tokens["refresh_token"]}

    results = await asyncio.gather(*(service.client.post("/auth/refresh", json=body)
                                     for _ in range(5)))

    codes = sorted(r.status_code for r in results)
    assert codes.count(200) <= 1
    assert codes.count(401) >= 4


async def test_logout_ends_the_session_and_is_idempotent(service: Service) -> None:
    user = await service.register()
    tokens = await service.login(user["email"])
    body = {"refresh_token": tokens["refresh_token"]}

    first = await service.client.post("/auth/logout", json=body)
    second = await service.client.post("/auth/logout", json=body)
    refresh = await service.client.post("/auth/refresh", json=body)

    assert first.status_code == second.status_code == 204
    assert refresh.status_code == 401
    assert refresh.json()["code"] == "session_revoked"


async def test_logout_all_ends_every_session_of_the_caller(service: Service) -> None:
    user = await service.register()
    one = await service.login(user["email"])
    two = await service.login(user["email"])

    done = await service.client.post("/auth/logout-all", headers=bearer(one["access_token"]))

    assert done.status_code == 204
    for tokens in (one, two):
        refreshed = await service.client.post(
            "/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 401


def _tamper(token: str, **claims: object) -> str:
    """The same token with its payload changed and the old signature kept."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_tampered_tokens_are_rejected(service: Service) -> None:
    user = await service.register()
    tokens = await service.login(user["email"])
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    other_key = "another-secret-that-is-long-enough-000000"
    forged = {
        "escalated roles": _tamper(access, roles=["admin", "customer"]),
        "bad signature": access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB"),
        "other key": jwt.encode(jwt.decode(access, options={"verify_signature": False}),
                                other_key, algorithm="HS256"),
        "alg none": jwt.encode(jwt.decode(access, options={"verify_signature": False}),
                               None, algorithm="none"),
        "garbage": "not.a.token",
    }

    for what, token in forged.items():
        response = await service.client.get("/admin/users", headers=bearer(token))
        assert response.status_code == 401, what
        assert response.json()["code"] == "token_invalid", what
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": _tamper(refresh, sub=user["id"], fam="x")})
    assert refreshed.status_code == 401


async def test_expired_tokens_are_rejected(service: Service) -> None:
    user = await service.register()
    tokens = await service.login(user["email"])
    fam = TokenService(service.settings).verify(tokens["refresh_token"], "refresh").fam
    an_hour_ago = TokenService(service.settings, clock=lambda: time.time() - 3600)
    expired_access = an_hour_ago.issue_access(user["id"], ["customer"]).token
    a_week_ago = TokenService(service.settings, clock=lambda: time.time() - 8 * 24 * 3600)
    expired_refresh = a_week_ago.issue_refresh(user["id"], family=fam).token

    me = await service.client.get("/users/me", headers=bearer(expired_access))
    refreshed = await service.client.post("/auth/refresh",
                                          json={"refresh_token": expired_refresh})

    assert me.status_code == refreshed.status_code == 401
    assert me.json()["code"] == refreshed.json()["code"] == "token_expired"
    assert me.headers["www-authenticate"] == "Bearer"


async def test_an_access_token_is_not_a_refresh_token_and_vice_versa(service: Service) -> None:
    user = await service.register()
    tokens = await service.login(user["email"])

    refreshed = await service.client.post("/auth/refresh",
                                          json={"refresh_token": tokens["access_token"]})
    me = await service.client.get("/users/me", headers=bearer(tokens["refresh_token"]))

    assert refreshed.status_code == me.status_code == 401
    assert refreshed.json()["code"] == me.json()["code"] == "wrong_token_type"


async def test_profile_endpoints_need_a_token(service: Service) -> None:
    for method, path in [("GET", "/users/me"), ("GET", "/users/me/addresses"),
                         ("PATCH", "/users/me/preferences"), ("POST", "/auth/logout-all")]:
        response = await service.client.request(method, path, json={})
        assert response.status_code == 401, path


async def test_changing_the_password_ends_other_sessions_and_starts_a_new_one(
    service: Service,
) -> None:
    user = await service.register()
    old = await service.login(user["email"])
    new_password = "a-brand-new-secret-7"

    async with service.client_at("10.1.0.2") as client:
        wrong = await client.post("/users/me/password", headers=bearer(old["access_token"]),
                                  json={"current_password": "not-it-123",
                                        "new_password": new_password})
        changed = await client.post("/users/me/password", headers=bearer(old["access_token"]),
                                    json={"current_password": PASSWORD,
                                          "new_password": new_password})

    assert wrong.status_code == 400
    assert wrong.json()["code"] == "wrong_current_password"
    assert changed.status_code == 200
    assert (await service.client.post("/auth/refresh", json={
        "refresh_token": old["refresh_token"]})).status_code == 401
    assert (await service.client.post("/auth/refresh", json={
        "refresh_token": changed.json()["refresh_token"]})).status_code == 200
    assert (await service.client.post("/auth/login", json={
        "email": user["email"], "password": PASSWORD})).status_code == 401
    await service.login(user["email"], new_password)


# -- revocation, keys, idempotent registration -----------------------------------------------


async def test_logout_refuses_the_sessions_access_tokens_at_once(service: Service) -> None:
    user, _ = await service.signed_in()
    tokens = await service.login(user["email"])
    other_device = await service.login(user["email"])

    logout = await service.client.post("/auth/logout", headers=bearer(tokens["access_token"]),
                                       json={"refresh_token": tokens["refresh_token"]})
    me = await service.client.get("/users/me", headers=bearer(tokens["access_token"]))
    elsewhere = await service.client.get("/users/me",
                                         headers=bearer(other_device["access_token"]))

    assert logout.status_code == 204
    assert me.status_code == 401
    assert me.json()["code"] == "token_revoked"
    assert elsewhere.status_code == 200  # another session of the same user goes on


async def test_access_tokens_name_their_session(service: Service) -> None:
    user, _ = await service.signed_in()
    tokens = await service.login(user["email"])
    verifier = TokenService(service.settings)

    access = verifier.verify(tokens["access_token"], "access")
    refresh = verifier.verify(tokens["refresh_token"], "refresh")

    assert access.sid == refresh.fam is not None
    assert access.aud == service.settings.jwt_api_audience


async def test_the_jwks_publishes_the_key_tokens_are_verified_with(service: Service) -> None:
    user, _ = await service.signed_in()
    tokens = await service.login(user["email"])

    published = await service.client.get("/.well-known/jwks.json")
    key = jwt.PyJWKSet.from_dict(published.json())[
        jwt.get_unverified_header(tokens["access_token"])["kid"]]
    claims = jwt.decode(tokens["access_token"], key.key, algorithms=[key.algorithm_name],
                        audience=service.settings.jwt_api_audience)

    assert published.status_code == 200
    assert all("d" not in entry for entry in published.json()["keys"])  # public halves only
    assert claims["sub"] == user["id"]


async def test_a_registration_retried_with_its_key_gets_the_first_account(
        service: Service) -> None:
    email = f"{unique('retry')}@example.com"
    key = {"Idempotency-Key": unique("register-key")}
    body = {"email": email, "password": PASSWORD}

    first = await service.client.post("/auth/register", json=body, headers=key)
    retry = await service.client.post("/auth/register", json=body, headers=key)
    without_key = await service.client.post("/auth/register", json=body)

    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert without_key.status_code == 409
    assert without_key.json()["code"] == "email_taken"


async def test_a_failed_registration_lets_its_key_be_retried(service: Service) -> None:
    email = f"{unique('taken')}@example.com"
    await service.register(email)
    key = {"Idempotency-Key": unique("register-key")}

    taken = await service.client.post("/auth/register", headers=key,
                                      json={"email": email, "password": PASSWORD})
    again = await service.client.post("/auth/register", headers=key,
                                      json={"email": email, "password": PASSWORD})

    assert taken.status_code == again.status_code == 409
    assert again.json()["code"] == "email_taken"


async def test_logout_works_with_an_expired_or_revoked_token_in_the_header(
        service: Service) -> None:
    user, _ = await service.signed_in()
    tokens = await service.login(user["email"])
    first = await service.client.post("/auth/logout", headers=bearer(tokens["access_token"]),
                                      json={"refresh_token": tokens["refresh_token"]})

    again = await service.client.post("/auth/logout", headers=bearer(tokens["access_token"]),
                                      json={"refresh_token": tokens["refresh_token"]})

    assert first.status_code == again.status_code == 204
