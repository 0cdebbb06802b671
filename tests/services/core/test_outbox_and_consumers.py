"""The outbox and idempotent consumers on real PostgreSQL and Redis Streams.

At-least-once delivery plus an idempotent consumer gives an effect exactly once: data
committed ⇒ its event handled once; data rolled back ⇒ no event; redelivery changes
nothing; poison goes to the dead-letter stream with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.testbed.redis import RedisServer
from services.core.db import Database
from services.core.events.bus import OutgoingMessage
from services.core.events.consumer import EventConsumer, EventHandlers, PoisonEvent, idempotent
from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import OutboxRelay, add_event
from services.core.events.redis_streams import RedisStreamsBus
from services.core.events.tables import outbox
from services.core.transient import RetryLater
from tests.services.support import eventually, unique

from .sample_service.models import Widget

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TOPIC = "widgets.events"


@pytest.fixture
def bus(redis_client: Redis) -> RedisStreamsBus:
    return RedisStreamsBus(redis_client, prefix=unique("t") + ".", consumer=unique("c"),
                           claim_idle_seconds=0.2)


def widget_created(name: str) -> EventEnvelope:
    return EventEnvelope.new("widget.created", source="widgets", key=name,
                             payload={"name": name})


async def create_widget(database: Database, name: str, *, commit: bool = True) -> EventEnvelope:
    """The service's write path: the row and its event in one transaction."""
    event = widget_created(name)
    with contextlib.suppress(_RolledBack):
        async with database.session() as session, session.begin():
            session.add(Widget(name=name, count=0))
            await add_event(session, event)
            if not commit:
                raise _RolledBack  # e.g. a later step of the same request failed
    return event


class _RolledBack(Exception):
    pass


def counting_handlers() -> EventHandlers:
    """A deliberately non-idempotent effect (count + 1), so a repeat would show."""
    handlers = EventHandlers()

    @handlers.on("widget.created")
    async def count_delivery(session: AsyncSession, event: EventEnvelope) -> None:
        await session.execute(update(Widget).where(Widget.name == event.payload["name"])
                              .values(count=Widget.count + 1))

    return handlers


@pytest.fixture
async def running_consumer(
    migrated: Database, bus: RedisStreamsBus,
) -> AsyncIterator[EventConsumer]:
    handlers = counting_handlers()
    consumer = EventConsumer(bus, TOPIC, "counter", idempotent(migrated, "counter",
                                                               handlers.dispatch),
                             accepts=handlers.handles, max_attempts=3,
                             retry_base_seconds=0.01, wait_seconds=0.1)
    task = asyncio.create_task(consumer.run())
    yield consumer
    consumer.stop()
    await asyncio.wait_for(task, 10)


async def widget_count(database: Database, name: str) -> int | None:
    async with database.session() as session:
        return await session.scalar(select(Widget.count).where(Widget.name == name))


async def stream_entries(bus: RedisStreamsBus, topic: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await bus.redis.xrange(bus.stream(topic))]


async def test_committed_data_delivers_its_event_exactly_once(
    migrated: Database, bus: RedisStreamsBus, running_consumer: EventConsumer,
) -> None:
    await create_widget(migrated, "gear")
    relay = OutboxRelay(migrated, bus)

    assert await relay.publish_pending() == 1
    await eventually(lambda: _equals(widget_count(migrated, "gear"), 1), what="delivery")

    # The relay crashed before marking the row sent: it publishes the event again.
    async with migrated.session() as session, session.begin():
        await session.execute(update(outbox).values(published_at=None))
    assert await relay.publish_pending() == 1
    await asyncio.sleep(0.5)

    assert len(await stream_entries(bus, TOPIC)) == 2
    assert await widget_count(migrated, "gear") == 1


async def test_rolled_back_data_publishes_no_event(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    await create_widget(migrated, "ghost", commit=False)

    assert await OutboxRelay(migrated, bus).publish_pending() == 0
    assert await stream_entries(bus, TOPIC) == []
    assert await widget_count(migrated, "ghost") is None


async def test_several_relays_publish_each_row_once(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    async with migrated.session() as session, session.begin():
        for i in range(300):
            await add_event(session, widget_created(f"w{i}"))
    relays = [OutboxRelay(migrated, bus, batch_size=25) for _ in range(4)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while published := await relay.publish_pending():
            total += published
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))

    assert sum(counts) == 300
    ids = [orjson.loads(e[b"value"])["id"] for e in await stream_entries(bus, TOPIC)]
    assert len(ids) == len(set(ids)) == 300


async def test_a_commit_wakes_the_relay_without_waiting_for_the_poll(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    relay = OutboxRelay(migrated, bus, poll_interval=30)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.2)  # the relay is now idle for 30 s …
        await create_widget(migrated, "prompt")
        await eventually(lambda: _has_entries(bus, TOPIC, 1), within=3, what="publish")
    finally:
        relay.stop()
        await asyncio.wait_for(task, 5)


async def test_commits_right_behind_each_other_are_published_in_one_batch(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    """The relay lingers after a wake-up, so five quick commits cost one pass: one UPDATE
    marks them all, with one transaction time."""
    relay = OutboxRelay(migrated, bus, poll_interval=30, linger_seconds=0.5)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.2)
        for n in range(5):
            await create_widget(migrated, f"batched-{n}")
        await eventually(lambda: _has_entries(bus, TOPIC, 5), within=5, what="publish")
        async with migrated.session() as session:
            passes = await session.scalar(select(func.count(outbox.c.published_at.distinct())))
        assert passes == 1
    finally:
        relay.stop()
        await asyncio.wait_for(task, 5)


async def test_redelivered_events_change_nothing(
    migrated: Database, bus: RedisStreamsBus, running_consumer: EventConsumer,
) -> None:
    event = await create_widget(migrated, "dup")
    message = OutgoingMessage(TOPIC, event.key, event.to_bytes())

    await bus.publish([message, message, message])
    await eventually(lambda: _consumed(bus, "counter", 3), what="three deliveries consumed")

    assert await widget_count(migrated, "dup") == 1


async def test_unknown_event_types_are_skipped_and_acknowledged(
    migrated: Database, bus: RedisStreamsBus, running_consumer: EventConsumer,
) -> None:
    other = EventEnvelope.new("widget.painted", source="widgets", key="x", payload={})
    await bus.publish([OutgoingMessage(TOPIC, "x", other.to_bytes())])

    await eventually(lambda: _consumed(bus, "counter", 1), what="skip")
    assert await stream_entries(bus, TOPIC + ".dlq") == []


async def test_bytes_that_are_not_an_event_go_to_the_dead_letter_stream(
    migrated: Database, bus: RedisStreamsBus, running_consumer: EventConsumer,
) -> None:
    await bus.publish([OutgoingMessage(TOPIC, "k", b"\xff not an envelope")])

    await eventually(lambda: _has_entries(bus, TOPIC + ".dlq", 1), what="dead letter")
    letter = orjson.loads((await stream_entries(bus, TOPIC + ".dlq"))[0][b"value"])
    assert letter["error_type"] == "InvalidEvent"
    assert letter["group"] == "counter"
    assert "original_base64" in letter
    await eventually(lambda: _pending(bus, "counter", 0), what="ack")


async def test_a_handler_that_keeps_failing_dead_letters_after_max_attempts(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    calls = 0
    handlers = EventHandlers()

    @handlers.on("widget.created")
    async def broken(session: AsyncSession, event: EventEnvelope) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("price cannot be negative")

    consumer = EventConsumer(bus, TOPIC, "broken", idempotent(migrated, "broken",
                                                             handlers.dispatch),
                             max_attempts=3, retry_base_seconds=0.01, wait_seconds=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        event = widget_created("bad")
        await bus.publish([OutgoingMessage(TOPIC, event.key, event.to_bytes())])
        await eventually(lambda: _has_entries(bus, TOPIC + ".dlq", 1), what="dead letter")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)

    letter = orjson.loads((await stream_entries(bus, TOPIC + ".dlq"))[0][b"value"])
    assert (letter["attempts"], letter["error_type"], letter["error"]) == (
        3, "ValueError", "price cannot be negative")
    assert EventEnvelope.model_validate_json(letter["original"]) == event
    assert calls == 3
    # Nothing of the failed attempts was kept: the processed mark rolled back with them.
    async with migrated.session() as session:
        assert await session.scalar(text("SELECT count(*) FROM processed_events")) == 0


async def test_a_poison_payload_is_dead_lettered_at_once(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    calls = 0
    handlers = EventHandlers()

    @handlers.on("widget.created")
    async def strict(session: AsyncSession, event: EventEnvelope) -> None:
        nonlocal calls
        calls += 1
        raise PoisonEvent("payload lacks a price")

    consumer = EventConsumer(bus, TOPIC, "strict", idempotent(migrated, "strict",
                                                             handlers.dispatch),
                             max_attempts=5, wait_seconds=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        event = widget_created("w")
        await bus.publish([OutgoingMessage(TOPIC, event.key, event.to_bytes())])
        await eventually(lambda: _has_entries(bus, TOPIC + ".dlq", 1), what="dead letter")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)

    assert calls == 1


async def test_transient_failures_are_retried_not_dead_lettered(
    migrated: Database, bus: RedisStreamsBus,
) -> None:
    calls = 0
    handlers = EventHandlers()

    @handlers.on("widget.created")
    async def flaky(session: AsyncSession, event: EventEnvelope) -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:  # more failures than max_attempts: they must not count
            raise RetryLater("payment service is restarting")

    consumer = EventConsumer(bus, TOPIC, "flaky", idempotent(migrated, "flaky",
                                                            handlers.dispatch),
                             max_attempts=2, retry_base_seconds=0.01, wait_seconds=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        event = widget_created("w")
        await bus.publish([OutgoingMessage(TOPIC, event.key, event.to_bytes())])
        await eventually(lambda: _consumed(bus, "flaky", 1), what="handled")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)

    assert calls == 6
    assert await stream_entries(bus, TOPIC + ".dlq") == []


async def test_a_message_left_by_a_crashed_consumer_is_taken_over(
    migrated: Database, bus: RedisStreamsBus, redis_client: Redis,
) -> None:
    event = await create_widget(migrated, "orphan")
    await bus.publish([OutgoingMessage(TOPIC, event.key, event.to_bytes())])
    crashed = RedisStreamsBus(redis_client, prefix=bus.prefix, consumer="crashed")
    taken = await (await crashed.subscribe(TOPIC, "counter")).fetch(10, 0.1)
    assert len(taken) == 1  # … and it died before acknowledging

    handlers = counting_handlers()
    survivor = EventConsumer(bus, TOPIC, "counter", idempotent(migrated, "counter",
                                                              handlers.dispatch),
                             accepts=handlers.handles, wait_seconds=0.1)
    task = asyncio.create_task(survivor.run())
    try:
        await eventually(lambda: _equals(widget_count(migrated, "orphan"), 1),
                         what="takeover")
    finally:
        survivor.stop()
        await asyncio.wait_for(task, 10)
    await eventually(lambda: _pending(bus, "counter", 0), what="ack")


async def test_events_wait_in_the_outbox_while_the_bus_is_down(
    migrated: Database, tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
    bus = RedisStreamsBus(client, prefix="down.", consumer="c")
    try:
        server.stop()
        await create_widget(migrated, "patient")
        relay = OutboxRelay(migrated, bus)
        with pytest.raises(Exception, match=r"(?i)connect|refused"):
            await relay.publish_pending()
        async with migrated.session() as session:
            row = (await session.execute(select(outbox.c.attempts, outbox.c.last_error,
                                                outbox.c.published_at))).one()
        assert row.attempts == 1 and row.last_error and row.published_at is None

        server = RedisServer(tmp_path / "redis", port=server.port).start()
        assert await relay.publish_pending() == 1
        assert await client.xlen("down." + TOPIC) == 1
        async with migrated.session() as session:
            assert await session.scalar(
                select(func.count()).where(outbox.c.published_at.is_(None))) == 0
    finally:
        server.stop()
        await client.aclose()


# -- small async predicates -----------------------------------------------------------------


async def _equals(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def _has_entries(bus: RedisStreamsBus, topic: str, n: int) -> bool:
    return await bus.redis.exists(bus.stream(topic)) == 1 and \
        await bus.redis.xlen(bus.stream(topic)) >= n


async def _pending(bus: RedisStreamsBus, group: str, n: int) -> bool:
    info = await bus.redis.xpending(bus.stream(TOPIC), group)
    return int(info["pending"]) == n


async def _consumed(bus: RedisStreamsBus, group: str, n: int) -> bool:
    """At least ``n`` entries are on the stream, ``group`` has read up to the last one, and
    acknowledged everything."""
    stream = bus.stream(TOPIC)
    if await bus.redis.xlen(stream) < n:
        return False
    last = await bus.redis.xrevrange(stream, count=1)
    groups = await bus.redis.xinfo_groups(stream)
    mine = next((g for g in groups if g["name"] == group.encode()), None)
    return mine is not None and mine["last-delivered-id"] == last[0][0] and \
        int(mine["pending"]) == 0
