"""The address book: CRUD, one default, a size limit, and nobody else's addresses.

The module's service allows 5 addresses per user.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from .conftest import Service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def address(label: str, **fields: Any) -> dict[str, Any]:
    return {"label": label, "recipient_name": "Ada Lovelace", "line1": "12 St James's Sq",
            "city": "London", "postal_code": "sw1y 4jh", "country": "gb", **fields}


async def _add(service: Service, auth: dict[str, str], label: str,
               **fields: Any) -> dict[str, Any]:
    response = await service.client.post("/users/me/addresses", headers=auth,
                                         json=address(label, **fields))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _defaults(service: Service, auth: dict[str, str]) -> list[str]:
    book = (await service.client.get("/users/me/addresses", headers=auth)).json()
    return [a["label"] for a in book if a["is_default"]]


async def test_the_first_address_becomes_the_default_and_values_are_normalised(
    service: Service,
) -> None:
    _, auth = await service.signed_in()

    home = await _add(service, auth, "home")
    work = await _add(service, auth, "work")

    assert home["is_default"] and not work["is_default"]
    assert home["country"] == "GB" and home["postal_code"] == "SW1Y 4JH"
    assert await _defaults(service, auth) == ["home"]


async def test_a_new_default_takes_over_from_the_old_one(service: Service) -> None:
    _, auth = await service.signed_in()
    await _add(service, auth, "home")
    await _add(service, auth, "work", is_default=True)
    shop = await _add(service, auth, "shop")
    assert await _defaults(service, auth) == ["work"]

    moved = await service.client.post(f"/users/me/addresses/{shop['id']}/default",
                                      headers=auth)
    assert moved.status_code == 200 and moved.json()["is_default"]
    assert await _defaults(service, auth) == ["shop"]

    patched = await service.client.patch(f"/users/me/addresses/{shop['id']}", headers=auth,
                                         json={"is_default": True, "city": "Leeds"})
    assert patched.json()["city"] == "Leeds"
    assert await _defaults(service, auth) == ["shop"]


async def test_the_default_cannot_be_unset_only_moved(service: Service) -> None:
    _, auth = await service.signed_in()
    home = await _add(service, auth, "home")

    response = await service.client.patch(f"/users/me/addresses/{home['id']}", headers=auth,
                                          json={"is_default": False})

    assert response.status_code == 409
    assert response.json()["code"] == "default_required"
    assert await _defaults(service, auth) == ["home"]


async def test_deleting_the_default_promotes_another_and_the_last_leaves_none(
    service: Service,
) -> None:
    _, auth = await service.signed_in()
    home = await _add(service, auth, "home")
    work = await _add(service, auth, "work")

    deleted = await service.client.delete(f"/users/me/addresses/{home['id']}", headers=auth)
    assert deleted.status_code == 204
    assert await _defaults(service, auth) == ["work"]

    await service.client.delete(f"/users/me/addresses/{work['id']}", headers=auth)
    assert (await service.client.get("/users/me/addresses", headers=auth)).json() == []
    gone = await service.client.get(f"/users/me/addresses/{home['id']}", headers=auth)
    assert gone.status_code == 404


async def test_the_address_book_has_a_size_limit(service: Service) -> None:
    _, auth = await service.signed_in()
    for n in range(5):
        await _add(service, auth, f"a{n}")

    response = await service.client.post("/users/me/addresses", headers=auth,
                                         json=address("one too many"))

    assert response.status_code == 409
    assert response.json()["code"] == "address_book_full"


async def test_concurrent_new_defaults_leave_exactly_one(service: Service) -> None:
    _, auth = await service.signed_in()

    results = await asyncio.gather(*(
        service.client.post("/users/me/addresses", headers=auth,
                            json=address(f"a{n}", is_default=True))
        for n in range(5)))

    assert [r.status_code for r in results] == [201] * 5
    assert len(await _defaults(service, auth)) == 1


async def test_another_users_address_is_not_found_for_any_verb(service: Service) -> None:
    _, owner = await service.signed_in()
    _, stranger = await service.signed_in()
    home = await _add(service, owner, "home")
    path = f"/users/me/addresses/{home['id']}"

    responses = [
        await service.client.get(path, headers=stranger),
        await service.client.patch(path, headers=stranger, json={"city": "Paris"}),
        await service.client.post(f"{path}/default", headers=stranger),
        await service.client.delete(path, headers=stranger),
        await service.client.get(f"/users/me/addresses/{uuid.uuid4()}", headers=owner),
    ]

    assert [r.status_code for r in responses] == [404] * 5
    assert (await service.client.get(path, headers=owner)).json()["city"] == "London"


@pytest.mark.parametrize("fields", [
    {"country": "GBR"},
    {"postal_code": "!!"},
    {"line1": "   "},
    {"recipient_name": "nul\u0000byte"},
    {"phone": "call me"},
    {"is_defualt": True},
])
async def test_addresses_outside_the_rules_are_422(
    service: Service, fields: dict[str, Any],
) -> None:
    _, auth = await service.signed_in()

    response = await service.client.post("/users/me/addresses", headers=auth,
                                         json=address("bad", **fields))

    assert response.status_code == 422


async def test_required_address_fields_cannot_be_nulled(service: Service) -> None:
    _, auth = await service.signed_in()
    home = await _add(service, auth, "home", line2="Flat 2")

    nulled = await service.client.patch(f"/users/me/addresses/{home['id']}", headers=auth,
                                        json={"city": None})
    cleared = await service.client.patch(f"/users/me/addresses/{home['id']}", headers=auth,
                                         json={"line2": None})

    assert nulled.status_code == 422
    assert cleared.status_code == 200 and cleared.json()["line2"] is None
