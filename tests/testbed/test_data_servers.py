"""PostgreSQL, Redis and stripe-mock from the test bed are the real servers."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as redis
import stripe

from kommerce.testbed.postgres import PostgresServer
from kommerce.testbed.redis import RedisServer
from kommerce.testbed.stripe_mock import StripeMock


@pytest.mark.postgres
async def test_postgres_round_trip_with_trigram_extension(postgres_server: PostgresServer) -> None:
    postgres_server.create_database("bed_roundtrip")
    conn = await asyncpg.connect(postgres_server.libpq_dsn("bed_roundtrip"))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        await conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO items (name) VALUES ($1), ($2)", "laptop", "lamp")
        similar = await conn.fetchval(
            "SELECT name FROM items ORDER BY similarity(name, $1) DESC LIMIT 1", "laptpo")
        assert similar == "laptop"
        assert (await conn.fetchval("SHOW server_version")).startswith(("15", "16", "17"))
    finally:
        await conn.close()


@pytest.mark.redis
async def test_redis_round_trip_and_streams(redis_server: RedisServer) -> None:
    r = redis.from_url(redis_server.url)
    try:
        await r.set("bed:key", "value", ex=30)
        assert await r.get("bed:key") == b"value"
        entry_id = await r.xadd("bed:stream", {"event": "hello"})
        entries = await r.xrange("bed:stream")
        assert entries == [(entry_id, {b"event": b"hello"})]
    finally:
        await r.aclose()


@pytest.mark.stripe
async def test_stripe_client_creates_and_confirms_payment_intent(stripe_mock: StripeMock) -> None:
    stripe_client = stripe.StripeClient(
        "sk_test_123", base_addresses={"api": stripe_mock.api_base},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )
    intent = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 2599, "currency": "usd", "payment_method_types": ["card"]},
        options={"idempotency_key": "bed-intent-1"},
    )
    assert intent.id.startswith("pi_")
    confirmed = await stripe_client.v1.payment_intents.confirm_async(
        intent.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.object == "payment_intent"
    with pytest.raises(stripe.InvalidRequestError):
        # stripe-mock validates every request against Stripe's spec.
        await stripe_client.v1.payment_intents.create_async(params={"amount": "lots"})
