"""Brute-force limits on login: per account and per client address, in Redis.

The module's service allows 3 failures per account and 8 per address in a 60 s window.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.services.support import unique

from .conftest import PASSWORD, Service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WRONG = "wrong-password-1"


async def test_an_account_locks_after_too_many_failures_then_answers_429_with_retry_after(
    service: Service,
) -> None:
    user = await service.register()
    async with service.client_at("10.2.0.1") as client:
        failures = [await client.post("/auth/login", json={"email": user["email"],
                                                           "password": WRONG})
                    for _ in range(3)]
        locked = await client.post("/auth/login", json={"email": user["email"],
                                                        "password": WRONG})
        right_password = await client.post("/auth/login", json={"email": user["email"],
                                                                "password": PASSWORD})

    assert [r.status_code for r in failures] == [401, 401, 401]
    assert locked.status_code == 429
    assert locked.json()["code"] == "login_throttled"
    assert locked.json()["details"] == {"limit": "account"}
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    # The lock holds even for the right password, or it would tell a guesser when they won.
    assert right_password.status_code == 429


async def test_the_account_lock_holds_from_every_address(service: Service) -> None:
    user = await service.register()
    for n in range(3):
        async with service.client_at(f"10.2.1.{n}") as client:
            await client.post("/auth/login", json={"email": user["email"], "password": WRONG})

    async with service.client_at("10.2.1.99") as client:
        locked = await client.post("/auth/login", json={"email": user["email"],
                                                        "password": PASSWORD})

    assert locked.status_code == 429


async def test_a_successful_login_clears_the_accounts_failures(service: Service) -> None:
    user = await service.register()
    async with service.client_at("10.2.2.1") as client:
        for _ in range(2):
            await client.post("/auth/login", json={"email": user["email"], "password": WRONG})
        ok = await client.post("/auth/login", json={"email": user["email"],
                                                    "password": PASSWORD})
        more = [await client.post("/auth/login", json={"email": user["email"],
                                                       "password": WRONG})
                for _ in range(3)]

    assert ok.status_code == 200
    assert [r.status_code for r in more] == [401, 401, 401]


async def test_one_address_spraying_many_accounts_is_stopped_by_the_address_limit(
    service: Service,
) -> None:
    async with service.client_at("10.2.3.1") as sprayer:
        statuses = [(await sprayer.post("/auth/login", json={
            "email": f"{unique('victim')}@example.com", "password": WRONG})).status_code
            for _ in range(9)]
        blocked = await sprayer.post("/auth/login", json={
            "email": f"{unique('victim')}@example.com", "password": WRONG})
    async with service.client_at("10.2.3.2") as neighbour:
        user = await service.register()
        unaffected = await neighbour.post("/auth/login", json={"email": user["email"],
                                                               "password": PASSWORD})

    assert statuses == [401] * 8 + [429]
    assert blocked.status_code == 429
    assert blocked.json()["details"] == {"limit": "address"}
    assert int(blocked.headers["retry-after"]) >= 1
    assert unaffected.status_code == 200


async def test_concurrent_guesses_cannot_exceed_the_account_limit(service: Service) -> None:
    """Attempts are counted before the password is checked, so a burst of parallel guesses
    gets no more password checks than the limit allows."""
    user = await service.register()
    async with service.client_at("10.2.4.1") as client:
        results = await asyncio.gather(*(
            client.post("/auth/login", json={"email": user["email"], "password": WRONG})
            for _ in range(10)))

    statuses = sorted(r.status_code for r in results)
    assert statuses.count(401) == 3
    assert statuses.count(429) == 7


async def test_the_lock_lifts_when_the_window_ends(service: Service) -> None:
    user = await service.register()
    async with service.client_at("10.2.5.1") as client:
        for _ in range(4):
            await client.post("/auth/login", json={"email": user["email"], "password": WRONG})
        # Instead of waiting out the window, let it end now: expire the counters.
        redis = service.app.state.runtime.redis
        async for key in redis.scan_iter(match=f"{service.settings.cache_key_prefix}login:*"):
            await redis.pexpire(key, 1)
        await asyncio.sleep(0.05)
        again = await client.post("/auth/login", json={"email": user["email"],
                                                       "password": PASSWORD})

    assert again.status_code == 200
