"""user.registered and user.updated go through the outbox, in the data's transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from kommerce.testbed.redis import RedisServer
from services.core.events.tables import outbox
from services.user.models import User
from tests.services.support import eventually, unique

from .conftest import PASSWORD, Service, user_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def _events(service: Service, user_id: str) -> list[dict[str, Any]]:
    async with service.database.session() as session:
        rows = (await session.execute(
            select(outbox.c.envelope).where(outbox.c.event_key == user_id)
            .order_by(outbox.c.seq))).scalars().all()
    return list(rows)


async def test_user_registered_is_written_in_the_same_transaction_as_the_user(
    user_database_url: str, redis_server: RedisServer,
) -> None:
    # No relay here: marking the row published would rewrite its xmin.
    async with user_service(user_database_url, redis_server.url,
                            outbox_enabled=False) as service:
        user = await service.register(full_name="Ada")
        async with service.database.session() as session:
            # xmin is the id of the transaction that wrote the row: equal means one commit.
            user_tx = await session.scalar(
                text("SELECT xmin::text FROM users WHERE id = :id"), {"id": user["id"]})
            event_tx = await session.scalar(
                text("SELECT xmin::text FROM outbox WHERE event_key = :id "
                     "AND event_type = 'user.registered'"), {"id": user["id"]})
        [event] = await _events(service, user["id"])

    assert user_tx is not None and user_tx == event_tx
    assert event["type"] == "user.registered"
    assert event["source"] == "user"
    assert event["payload"]["email"] == user["email"]
    assert event["payload"]["roles"] == ["customer"]
    assert event["payload"]["version"] == 1
    assert "password" not in str(event["payload"])


async def test_a_registration_that_fails_leaves_no_event(service: Service) -> None:
    email = f"{unique('once')}@example.com"
    user = await service.register(email)

    await service.client.post("/auth/register", json={"email": email, "password": PASSWORD})

    assert [e["type"] for e in await _events(service, user["id"])] == ["user.registered"]
    async with service.database.session() as session:
        count = await session.scalar(text(
            "SELECT count(*) FROM outbox WHERE envelope->'payload'->>'email' = :email"),
            {"email": email})
    assert count == 1


async def test_profile_preference_and_role_changes_publish_user_updated_with_a_version(
    service: Service,
) -> None:
    user, auth = await service.signed_in()
    admin = await service.admin()

    await service.client.patch("/users/me", headers=auth, json={"full_name": "Grace"})
    await service.client.patch("/users/me", headers=auth, json={"full_name": "Grace"})  # no-op
    await service.client.patch("/users/me/preferences", headers=auth,
                               json={"currency": "EUR"})
    await service.client.post(f"/admin/users/{user['id']}/roles", headers=admin,
                              json={"role": "admin"})

    events = await _events(service, user["id"])
    assert [(e["type"], e["payload"].get("changed"), e["payload"]["version"])
            for e in events] == [
        ("user.registered", None, 1),
        ("user.updated", ["full_name"], 2),
        ("user.updated", ["preferences"], 3),
        ("user.updated", ["roles"], 4),
    ]
    assert events[-1]["payload"]["preferences"]["currency"] == "EUR"
    async with service.database.session() as session:
        stored = await session.scalar(select(User.version).where(User.id == user["id"]))
    assert stored == 4


async def test_the_relay_publishes_the_users_events(service: Service) -> None:
    user = await service.register()

    async def published() -> bool:
        async with service.database.session() as session:
            pending = await session.scalar(
                select(outbox.c.published_at).where(outbox.c.event_key == user["id"]))
        return pending is not None

    await eventually(published, what="user.registered to be published")
