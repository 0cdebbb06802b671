"""Per-route, per-client rate limits in the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from kommerce.testbed.ports import free_port
from services.gateway.ratelimit import RateLimiter
from tests.services.support import unique

from .conftest import Echo, StartGateway, route

if TYPE_CHECKING:
    from kommerce.testbed.redis import RedisServer

pytestmark = pytest.mark.redis


async def test_the_request_past_the_limit_gets_429_with_retry_after(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/limited", echo_a.url, per_minute=3)])

    passed = [await gateway.client.get("/api/limited/x") for _ in range(3)]
    refused = await gateway.client.get("/api/limited/x")

    assert [r.status_code for r in passed] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining"] for r in passed] == ["2", "1", "0"]
    assert all(r.headers["x-ratelimit-limit"] == "3" for r in passed)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    # until enough of this minute's count has slid out of the last 60 s: under 2 minutes
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert echo_a.hits["/limited/x"] == 3


async def test_each_client_and_route_has_its_own_allowance(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/one", echo_a.url, per_minute=2),
                                   route("/api/two", echo_a.url, per_minute=2)])
    alice, bob = gateway.bearer("alice"), gateway.bearer("bob")

    for _ in range(2):
        assert (await gateway.client.get("/api/one/a", headers=alice)).status_code == 200
    alice_again = await gateway.client.get("/api/one/a", headers=alice)
    bob_first = await gateway.client.get("/api/one/b", headers=bob)
    anonymous = await gateway.client.get("/api/one/c")  # counted by address
    other_route = await gateway.client.get("/api/two/a", headers=alice)

    assert alice_again.status_code == 429
    assert bob_first.status_code == 200
    assert anonymous.status_code == 200
    assert other_route.status_code == 200


async def test_routes_without_a_limit_are_not_counted(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/free", echo_a.url)])

    responses = [await gateway.client.get("/api/free/x") for _ in range(5)]

    assert {r.status_code for r in responses} == {200}
    assert "x-ratelimit-limit" not in responses[0].headers


async def test_with_redis_down_requests_pass_and_the_gateway_stays_ready(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/limited", echo_a.url, per_minute=1)],
                                  redis_url=f"redis://127.0.0.1:{free_port()}/0")

    responses = [await gateway.client.get("/api/limited/down") for _ in range(3)]
    ready = await gateway.client.get("/ready")

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert ready.status_code == 200, ready.json()


async def test_the_window_slides_across_the_minute_boundary(redis_client: Redis) -> None:
    """Counts from the previous minute still weigh in, fading as it slides out of the last
    60 seconds: a client that spent far more than its allowance just before the minute
    turned cannot start afresh just after."""
    limiter = RateLimiter(redis_client, key_prefix=unique("rl") + ":", timeout_seconds=2)
    key = limiter.key("/api/x", "ip:10.0.0.1")
    now = await redis_server_seconds(redis_client)
    if now % 60 > 57:  # too close to the next minute for the arithmetic below
        await asyncio.sleep(60 - now % 60 + 0.1)
        now = await redis_server_seconds(redis_client)
    await redis_client.hset(key, mapping={str(int(now // 60) - 1): 600})

    decision = await limiter.hit("/api/x", "ip:10.0.0.1", 10)

    elapsed = now % 60
    assert not decision.allowed
    # 600 * (60 - elapsed - wait) / 60 + 0 + 1 <= 10  gives  wait = 60 - elapsed - 0.9
    assert 60 - elapsed - 1.5 <= decision.retry_after_seconds <= 60 - elapsed + 1


async def test_a_full_minute_waits_for_the_next_one(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client, key_prefix=unique("rl") + ":", timeout_seconds=2)
    now = await redis_server_seconds(redis_client)
    await redis_client.hset(limiter.key("/api/x", "user:u1"), mapping={str(int(now // 60)): 5})

    decision = await limiter.hit("/api/x", "user:u1", 5)

    assert not decision.allowed
    assert decision.retry_after_seconds >= 60 - now % 60 - 1


async def test_odd_client_identities_make_short_printable_keys(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client, key_prefix="p:", timeout_seconds=2)

    key = limiter.key("/api/x", "ip:" + "\u2603 forged, 1.2.3.4" * 50)

    assert key.startswith("p:ratelimit:/api/x:h:")
    assert len(key) < 100
    assert key.isprintable()


async def redis_server_seconds(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + micros / 1_000_000


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
