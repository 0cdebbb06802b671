"""Access tokens stop working when their session ends, only the user service can mint a
user's token, and a registration that succeeded is never reported as a failure.

Before: a signed access token stayed good for its 15 minutes whatever happened (logout,
password change, a removed admin role, a stolen refresh token detected), every service held
the one HMAC key and could mint an admin's token, and a registration whose answer the
client gave up on could only be retried into ``409 email_taken``.

Through the gateway of ``kommerce up`` (and, where a service checks tokens itself, at the
service directly), on the real servers.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from services.core.signing import generate_private_key_pem, load_private_key
from tests.shop import Shop, Shopper, token_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def shop(shop: Shop) -> Iterator[Shop]:
    """The session's shop, reached from a client address of this test's own (the gateway
    believes X-Forwarded-For from loopback): /api/auth takes 20 requests a minute per
    address, and each test here registers and logs in several times."""
    own = Shop(data_dir=shop.data_dir, port=shop.port)
    own.api.headers["X-Forwarded-For"] = ".".join(
        str(random.randint(1, 254)) for _ in range(4))
    yield own
    own.api.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused_as_revoked(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.json()["code"] == "token_revoked"


def new_category(shop: Shop, headers: dict[str, str]) -> httpx.Response:
    """An admin-only write through the gateway."""
    return shop.api.post("/categories", headers=headers, json={
        "slug": f"sec-tok-{uuid.uuid4().hex[:10]}", "name": "Token test"})


def user_service(shop: Shop) -> httpx.Client:
    return httpx.Client(base_url=shop.service_url("user"), timeout=60)


def test_logout_refuses_the_old_access_token_at_once(shop: Shop) -> None:
    shopper = shop.register()
    assert shop.api.get("/users/me", headers=shopper.auth).status_code == 200

    logout = shop.api.post("/auth/logout", headers=shopper.auth,
                           json={"refresh_token": shopper.refresh_token})

    assert logout.status_code == 204, logout.text
    assert refused_as_revoked(shop.api.get("/users/me", headers=shopper.auth))
    assert refused_as_revoked(shop.api.get("/orders", headers=shopper.auth))
    # A service that checks bearer tokens itself refuses it too.
    with httpx.Client(base_url=shop.service_url("order"), timeout=30) as order:
        assert refused_as_revoked(order.get("/orders", headers=shopper.auth))


def test_a_password_change_refuses_the_tokens_issued_before_it(shop: Shop) -> None:
    shopper = shop.register()
    other_device = shop.login(shopper.email, PASSWORD)

    changed = shop.api.post("/users/me/password", headers=shopper.auth, json={
        "current_password": PASSWORD, "new_password": "a-brand-new-passphrase-42"})

    assert changed.status_code == 200, changed.text
    assert refused_as_revoked(shop.api.get("/users/me", headers=shopper.auth))
    assert refused_as_revoked(shop.api.get("/users/me", headers=other_device.auth))
    assert shop.api.get("/users/me", headers=bearer(changed.json()["access_token"])
                        ).status_code == 200


def test_a_removed_admin_role_is_gone_at_once(shop: Shop) -> None:
    admin = shop.admin()
    shopper = shop.register()
    with user_service(shop) as users:
        granted = users.post(f"/admin/users/{shopper.user_id}/roles", headers=admin.auth,
                             json={"role": "admin"})
        assert granted.status_code == 200, granted.text
        promoted = shop.login(shopper.email, PASSWORD)
        assert new_category(shop, promoted.auth).status_code == 201

        removed = users.delete(f"/admin/users/{shopper.user_id}/roles/admin",
                               headers=admin.auth)

    assert removed.status_code == 200, removed.text
    assert refused_as_revoked(new_category(shop, promoted.auth))
    again = shop.login(shopper.email, PASSWORD)
    assert new_category(shop, again.auth).status_code == 403


def test_a_reused_refresh_token_ends_the_session_and_its_access_tokens(shop: Shop) -> None:
    shopper = shop.register()
    rotated = shop.api.post("/auth/refresh", json={"refresh_token": shopper.refresh_token})
    assert rotated.status_code == 200, rotated.text
    thief_access = rotated.json()["access_token"]

    reused = shop.api.post("/auth/refresh", json={"refresh_token": shopper.refresh_token})

    assert reused.status_code == 401
    assert reused.json()["code"] == "refresh_token_reused"
    assert refused_as_revoked(shop.api.get("/users/me", headers=bearer(thief_access)))
    assert refused_as_revoked(shop.api.get("/users/me", headers=shopper.auth))


def _claims(shopper: Shopper, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": shopper.user_id, "type": "access", "jti": uuid.uuid4().hex, "iat": now,
            "exp": now + 600, "iss": "kommerce", "aud": "kommerce",
            "roles": ["admin", "customer"], **changes}


def test_tokens_from_another_key_or_for_another_audience_are_refused(shop: Shop) -> None:
    shopper = shop.register()
    stranger_key = load_private_key(generate_private_key_pem())
    forged = jwt.encode(_claims(shopper), stranger_key, "EdDSA", headers={"kid": "user"})
    user_key = token_service(shop, "user")
    for_payment = user_key.issue_access(shopper.user_id, ["customer"],
                                        audience="payment").token

    other_key = shop.api.get("/users/me", headers=bearer(forged))
    other_audience = shop.api.get("/users/me", headers=bearer(for_payment))

    assert other_key.status_code == 401 and other_key.json()["code"] == "token_invalid"
    assert other_audience.status_code == 401
    assert other_audience.json()["code"] == "token_wrong_audience"
    assert new_category(shop, bearer(forged)).status_code == 401


def test_a_compromised_service_cannot_mint_an_admin_or_speak_to_another_service(
        shop: Shop) -> None:
    shopper = shop.register()
    order_key = (shop.data_dir / "secrets" / "jwt-order.pem").read_text()
    as_admin = jwt.encode(_claims(shopper), load_private_key(order_key), "EdDSA",
                          headers={"kid": "service:order"})
    as_user = jwt.encode(_claims(shopper, sub="service:order", roles=["service"]),
                         load_private_key(order_key), "EdDSA",
                         headers={"kid": "service:order"})
    for_payment = token_service(shop, "order").issue_service("payment").token

    with httpx.Client(base_url=shop.service_url("product"), timeout=30) as product:
        direct = product.post("/categories", headers=bearer(as_admin),
                              json={"slug": f"sec-tok-{uuid.uuid4().hex[:10]}", "name": "x"})
        replayed = product.get("/inventory/reservations/" + str(uuid.uuid4()),
                               headers=bearer(for_payment))

    assert new_category(shop, bearer(as_admin)).status_code == 401
    assert shop.api.get("/users/me", headers=bearer(as_user)).status_code == 401
    assert direct.status_code == 401
    assert replayed.status_code == 401
    assert replayed.json()["code"] == "token_wrong_audience"


def _registration(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "full_name": "Patient Shopper"}


def _account_exists(shop: Shop, email: str) -> bool:
    admin = shop.admin()
    with user_service(shop) as users:
        found = users.get("/admin/users", params={"email": email}, headers=admin.auth)
    return found.status_code == 200 and found.json()["total"] == 1


def test_a_registration_retried_after_a_client_timeout_gets_the_account_it_made(
        shop: Shop) -> None:
    email = f"patient-{uuid.uuid4().hex[:12]}@example.com"
    key = str(uuid.uuid4())
    with httpx.Client(base_url=f"{shop.url}/api", timeout=0.05,
                      headers=shop.api.headers) as impatient, \
            pytest.raises(httpx.TimeoutException):
        impatient.post("/auth/register", json=_registration(email),
                       headers={"Idempotency-Key": key})
    deadline = time.monotonic() + 90
    while not _account_exists(shop, email):  # behind the gateway, it was made
        assert time.monotonic() < deadline, "the first registration never completed"
        time.sleep(0.5)

    retry = shop.api.post("/auth/register", json=_registration(email),
                          headers={"Idempotency-Key": key})

    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["email"] == email
    assert shop.login(email, PASSWORD).user_id == retry.json()["id"]


def test_a_retry_racing_the_first_registration_gets_the_same_account(shop: Shop) -> None:
    email = f"racing-{uuid.uuid4().hex[:12]}@example.com"
    key = str(uuid.uuid4())
    answers: list[httpx.Response] = []

    def register() -> None:
        with httpx.Client(base_url=f"{shop.url}/api", timeout=120,
                          headers=shop.api.headers) as client:
            answers.append(client.post("/auth/register", json=_registration(email),
                                       headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=register) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)

    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    assert answers[0].json()["id"] == answers[1].json()["id"]


def test_a_key_reused_for_another_address_is_refused(shop: Shop) -> None:
    key = str(uuid.uuid4())
    first = shop.api.post("/auth/register", headers={"Idempotency-Key": key},
                          json=_registration(f"first-{uuid.uuid4().hex[:10]}@example.com"))
    second = shop.api.post("/auth/register", headers={"Idempotency-Key": key},
                           json=_registration(f"second-{uuid.uuid4().hex[:10]}@example.com"))

    assert first.status_code == 201, first.text
    assert second.status_code == 422
    assert second.json()["code"] == "idempotency_key_reused"
