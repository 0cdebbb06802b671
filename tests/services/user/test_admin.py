"""Roles: admin-only endpoints, granting and revoking, seeding the first admin."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kommerce.testbed.redis import RedisServer
from services.core.auth import TokenService
from tests.services.support import unique

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Service, bearer, user_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def admin_calls(user_id: str) -> list[tuple[str, str, dict[str, object] | None]]:
    return [
        ("GET", "/admin/users", None),
        ("GET", f"/admin/users/{user_id}", None),
        ("POST", f"/admin/users/{user_id}/roles", {"role": "admin"}),
        ("DELETE", f"/admin/users/{user_id}/roles/admin", None),
    ]


async def test_admin_endpoints_are_403_for_customers_and_401_for_anonymous(
    service: Service,
) -> None:
    user, auth = await service.signed_in()

    for method, path, body in admin_calls(user["id"]):
        as_customer = await service.client.request(method, path, headers=auth, json=body)
        anonymous = await service.client.request(method, path, json=body)
        assert as_customer.status_code == 403, path
        assert as_customer.json()["code"] == "missing_role", path
        assert anonymous.status_code == 401, path


async def test_the_bootstrap_admin_lists_users_and_filters_by_email(service: Service) -> None:
    marker = unique("findme")
    await service.register(f"{marker}@example.com")
    admin = await service.admin()

    everyone = await service.client.get("/admin/users", headers=admin,
                                        params={"limit": 100})
    found = await service.client.get("/admin/users", headers=admin, params={"email": marker})
    wildcard = await service.client.get("/admin/users", headers=admin, params={"email": "%"})

    assert everyone.status_code == 200
    assert ADMIN_EMAIL in [u["email"] for u in everyone.json()["items"]]
    assert everyone.json()["total"] >= 2
    assert [u["email"] for u in found.json()["items"]] == [f"{marker}@example.com"]
    assert found.json()["total"] == 1
    assert wildcard.json()["total"] == 0  # '%' is text to match, not a LIKE pattern


async def test_a_granted_role_reaches_the_users_token_at_the_next_refresh(
    service: Service,
) -> None:
    user = await service.register()
    tokens = await service.login(user["email"])
    admin = await service.admin()

    granted = await service.client.post(f"/admin/users/{user['id']}/roles", headers=admin,
                                        json={"role": "admin"})
    refreshed = await service.client.post("/auth/refresh",
                                          json={"refresh_token": tokens["refresh_token"]})

    assert granted.status_code == 200
    assert granted.json()["roles"] == ["admin", "customer"]
    claims = TokenService(service.settings).verify(refreshed.json()["access_token"])
    assert claims.roles == ["admin", "customer"]
    listed = await service.client.get("/admin/users",
                                      headers=bearer(refreshed.json()["access_token"]))
    assert listed.status_code == 200


async def test_revoking_a_role_ends_the_users_sessions(service: Service) -> None:
    user = await service.register()
    admin = await service.admin()
    await service.client.post(f"/admin/users/{user['id']}/roles", headers=admin,
                              json={"role": "admin"})
    tokens = await service.login(user["email"])

    revoked = await service.client.delete(f"/admin/users/{user['id']}/roles/admin",
                                          headers=admin)
    refreshed = await service.client.post("/auth/refresh",
                                          json={"refresh_token": tokens["refresh_token"]})

    assert revoked.status_code == 200 and revoked.json()["roles"] == ["customer"]
    assert refreshed.status_code == 401


async def test_roles_that_must_stay_cannot_be_revoked(service: Service) -> None:
    user = await service.register()
    admin = await service.admin()
    admin_id = TokenService(service.settings).verify(admin["Authorization"][7:]).sub

    customer = await service.client.delete(f"/admin/users/{user['id']}/roles/customer",
                                           headers=admin)
    own = await service.client.delete(f"/admin/users/{admin_id}/roles/admin", headers=admin)

    assert customer.status_code == own.status_code == 409
    assert own.json()["code"] == "cannot_demote_self"


async def test_unknown_users_and_roles_are_404_and_422(service: Service) -> None:
    admin = await service.admin()

    missing = await service.client.post(f"/admin/users/{uuid.uuid4()}/roles", headers=admin,
                                        json={"role": "admin"})
    bad_role = await service.client.post(f"/admin/users/{uuid.uuid4()}/roles", headers=admin,
                                         json={"role": "superuser"})
    bad_id = await service.client.get("/admin/users/not-a-uuid", headers=admin)

    assert missing.status_code == 404
    assert bad_role.status_code == bad_id.status_code == 422


async def test_bootstrap_promotes_an_existing_account_only_with_its_password(
    user_database_url: str, redis_server: RedisServer,
) -> None:
    """Whoever registers the configured address first must not become admin by it."""
    squatted, owned = f"{unique('squat')}@example.com", f"{unique('own')}@example.com"
    async with user_service(user_database_url, redis_server.url) as first:
        await first.register(squatted, "squatters-pass-1")
        await first.register(owned, ADMIN_PASSWORD)
        schema = first.settings.database_schema

    for email, expected in [(squatted, ["customer"]), (owned, ["admin", "customer"])]:
        async with user_service(user_database_url, redis_server.url, database_schema=schema,
                                bootstrap_admin_email=email,
                                bootstrap_admin_password=ADMIN_PASSWORD) as restarted:
            password = "squatters-pass-1" if email == squatted else ADMIN_PASSWORD
            tokens = await restarted.login(email, password)
            me = await restarted.client.get("/users/me",
                                            headers=bearer(tokens["access_token"]))
            assert me.json()["roles"] == expected, email


async def test_the_command_line_grants_a_role_to_an_existing_account(service: Service) -> None:
    from typer.testing import CliRunner

    from services.user.cli import cli

    user = await service.register()
    env = {"KOMMERCE_DATABASE_URL": service.settings.database_url,
           "KOMMERCE_DATABASE_SCHEMA": service.settings.schema_name,
           "KOMMERCE_ENVIRONMENT": "test", "KOMMERCE_LOG_JSON": "false"}
    runner = CliRunner()

    # The command runs its own event loop, so it gets a thread of its own here.
    granted = await asyncio.to_thread(runner.invoke, cli,
                                      ["grant-role", user["email"].upper(), "admin"], env=env)
    missing = await asyncio.to_thread(runner.invoke, cli,
                                      ["grant-role", "nobody@example.com"], env=env)

    assert granted.exit_code == 0, granted.output
    assert missing.exit_code == 1
    admin = await service.admin()
    found = await service.client.get(f"/admin/users/{user['id']}", headers=admin)
    assert found.json()["roles"] == ["admin", "customer"]
