"""The signed-in user's profile and preferences."""

from __future__ import annotations

import pytest

from .conftest import Service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_profile_update_changes_only_the_fields_sent_and_null_clears(
    service: Service,
) -> None:
    _, auth = await service.signed_in(full_name="Grace Hopper")

    phone = await service.client.patch("/users/me", headers=auth,
                                       json={"phone": "+44 20 7946-0958"})
    cleared = await service.client.patch("/users/me", headers=auth, json={"full_name": None})

    assert phone.status_code == 200
    assert phone.json()["phone"] == "+442079460958"
    assert phone.json()["full_name"] == "Grace Hopper"
    assert cleared.json()["full_name"] is None
    assert cleared.json()["phone"] == "+442079460958"


@pytest.mark.parametrize("body", [
    {"phone": "12345"},
    {"full_name": ""},
    {"full_name": "x" * 201},
    {"email": "new@example.com"},
    {"roles": ["admin"]},
])
async def test_profile_updates_outside_the_rules_are_422(
    service: Service, body: dict[str, object],
) -> None:
    _, auth = await service.signed_in()

    response = await service.client.patch("/users/me", headers=auth, json=body)

    assert response.status_code == 422


async def test_preferences_default_then_merge_and_normalise(service: Service) -> None:
    _, auth = await service.signed_in()

    initial = await service.client.get("/users/me/preferences", headers=auth)
    updated = await service.client.patch("/users/me/preferences", headers=auth,
                                         json={"currency": "eur", "language": "en-gb"})
    opted_in = await service.client.patch("/users/me/preferences", headers=auth,
                                          json={"marketing_opt_in": True})

    assert initial.json() == {"currency": "USD", "language": "en", "marketing_opt_in": False}
    assert updated.json() == {"currency": "EUR", "language": "en-GB",
                              "marketing_opt_in": False}
    assert opted_in.json() == {"currency": "EUR", "language": "en-GB",
                               "marketing_opt_in": True}
    me = await service.client.get("/users/me", headers=auth)
    assert me.json()["preferences"] == opted_in.json()


@pytest.mark.parametrize("body", [
    {"currency": "EURO"},
    {"currency": None},
    {"language": "english"},
    {"marketing_opt_in": "maybe"},
    {"theme": "dark"},
])
async def test_preferences_outside_the_schema_are_422(
    service: Service, body: dict[str, object],
) -> None:
    _, auth = await service.signed_in()

    response = await service.client.patch("/users/me/preferences", headers=auth, json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
