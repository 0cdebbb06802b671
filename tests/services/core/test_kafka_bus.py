"""The Kafka backend on a real single-node KRaft broker: the same guarantees as Redis
Streams, and nothing lost when the broker restarts mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select, update

from services.core.db import Database
from services.core.events.bus import OutgoingMessage
from services.core.events.consumer import EventConsumer, idempotent
from services.core.events.envelope import EventEnvelope
from services.core.events.kafka import KafkaBus
from services.core.events.outbox import OutboxRelay
from services.core.events.tables import outbox
from tests.services.support import eventually, unique

from .sample_service.models import Widget
from .test_outbox_and_consumers import counting_handlers, create_widget, widget_count

if TYPE_CHECKING:
    from kommerce.testbed.kafka import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

TOPIC = "widgets.events"


@pytest.fixture
async def bus(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaBus]:
    kafka = KafkaBus(kafka_broker.bootstrap_servers, prefix=unique("t") + ".",
                     client_id="core-tests", partitions=3)
    yield kafka
    await kafka.stop()


def counting_consumer(database: Database, bus: KafkaBus, group: str = "counter") -> EventConsumer:
    handlers = counting_handlers()
    return EventConsumer(bus, TOPIC, group, idempotent(database, group, handlers.dispatch),
                         accepts=handlers.handles, max_attempts=3, retry_base_seconds=0.01,
                         wait_seconds=0.2)


@contextlib.asynccontextmanager
async def consuming(consumer: EventConsumer) -> AsyncIterator[EventConsumer]:
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)


async def read_topic(bus: KafkaBus, topic: str, expected: int) -> list[bytes]:
    """Every value on ``topic`` (from the start), once ``expected`` have arrived."""
    reader = AIOKafkaConsumer(bus.topic_name(topic), bootstrap_servers=bus.bootstrap_servers,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              group_id=None)
    await reader.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < expected:
                batches = await reader.getmany(timeout_ms=500)
                values += [r.value for records in batches.values() for r in records]
    finally:
        await reader.stop()
    return values


async def test_committed_data_is_delivered_exactly_once_over_kafka(
    migrated: Database, bus: KafkaBus,
) -> None:
    await create_widget(migrated, "bolt")
    relay = OutboxRelay(migrated, bus)
    assert await relay.publish_pending() == 1
    # A relay that crashed before marking the row publishes it a second time.
    async with migrated.session() as session, session.begin():
        await session.execute(update(outbox).values(published_at=None))
    assert await relay.publish_pending() == 1

    async with consuming(counting_consumer(migrated, bus)):
        await eventually(lambda: _count_is(migrated, "bolt", 1), within=60, what="delivery")
        await asyncio.sleep(1.0)

    assert len(await read_topic(bus, TOPIC, 2)) == 2
    assert await widget_count(migrated, "bolt") == 1


async def test_rolled_back_data_sends_nothing_to_kafka(
    migrated: Database, bus: KafkaBus,
) -> None:
    await create_widget(migrated, "phantom", commit=False)

    assert await OutboxRelay(migrated, bus).publish_pending() == 0


async def test_offsets_are_committed_only_for_handled_events(
    migrated: Database, bus: KafkaBus,
) -> None:
    for name in ("a", "b", "c"):
        await create_widget(migrated, name)
    await OutboxRelay(migrated, bus).publish_pending()
    async with consuming(counting_consumer(migrated, bus)):
        await eventually(lambda: _count_is(migrated, "c", 1), within=60, what="delivery")

    # A second consumer in the same group starts after the committed offsets: no repeats,
    # and a new event is picked up.
    await create_widget(migrated, "d")
    await OutboxRelay(migrated, bus).publish_pending()
    async with consuming(counting_consumer(migrated, bus)):
        await eventually(lambda: _count_is(migrated, "d", 1), within=60, what="delivery")

    assert [await widget_count(migrated, n) for n in "abcd"] == [1, 1, 1, 1]


async def test_a_running_consumer_commits_what_it_handled(
    migrated: Database, bus: KafkaBus,
) -> None:
    """Offsets are committed while the consumer runs, not only when it stops: a crash
    after a quiet spell redelivers nothing."""
    for name in ("a", "b"):
        await create_widget(migrated, name)
    await OutboxRelay(migrated, bus).publish_pending()
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap_servers)
    await admin.start()

    async def committed() -> int:
        offsets = await admin.list_consumer_group_offsets("counter")
        return sum(meta.offset for tp, meta in offsets.items()
                   if tp.topic == bus.topic_name(TOPIC) and meta.offset > 0)

    try:
        async with consuming(counting_consumer(migrated, bus)):
            await eventually(lambda: _count_is(migrated, "b", 1), within=60, what="delivery")
            await eventually(lambda: _equals(committed, 2), within=10,
                             what="the consumer to commit both offsets while running")
    finally:
        await admin.close()


async def _equals(read: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await read() == expected


async def test_poison_goes_to_the_dead_letter_topic_with_the_error(
    migrated: Database, bus: KafkaBus,
) -> None:
    await bus.publish([OutgoingMessage(TOPIC, "k", b"{}")])
    good = await create_widget(migrated, "after-poison")
    await OutboxRelay(migrated, bus).publish_pending()

    async with consuming(counting_consumer(migrated, bus)):
        await eventually(lambda: _count_is(migrated, "after-poison", 1), within=60,
                         what="the next event to be handled")

    [letter] = [orjson.loads(v) for v in await read_topic(bus, TOPIC + ".dlq", 1)]
    assert letter["error_type"] == "InvalidEvent"
    assert letter["original"] == "{}"
    assert good.key == "after-poison"


async def test_a_broker_restart_mid_stream_loses_no_event(
    migrated: Database, bus: KafkaBus, kafka_broker: KafkaBroker,
) -> None:
    """Writes keep committing while the broker bounces; every event arrives, once."""
    relay = OutboxRelay(migrated, bus, batch_size=20, poll_interval=0.1)
    relay_task = asyncio.create_task(relay.run())
    names = [f"r{i}" for i in range(120)]

    async def write_all() -> None:
        for name in names:
            await create_widget(migrated, name)
            await asyncio.sleep(0.02)

    try:
        async with consuming(counting_consumer(migrated, bus)):
            writer = asyncio.create_task(write_all())
            await eventually(lambda: _handled_at_least(migrated, 10), within=60,
                             what="the stream to be flowing")
            await asyncio.to_thread(kafka_broker.restart)
            await writer
            await eventually(lambda: _handled_at_least(migrated, len(names)), within=180,
                             what="every event to be handled after the restart")
    finally:
        relay.stop()
        await asyncio.wait_for(relay_task, 30)

    async with migrated.session() as session:
        counts = dict((await session.execute(select(Widget.name, Widget.count))).all())
        unpublished = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None)))
    assert counts == dict.fromkeys(names, 1)
    assert unpublished == 0


async def _count_is(database: Database, name: str, expected: int) -> bool:
    return await widget_count(database, name) == expected


async def _handled_at_least(database: Database, n: int) -> bool:
    async with database.session() as session:
        done = await session.scalar(select(func.count()).where(Widget.count >= 1))
    return (done or 0) >= n


def test_envelopes_keep_their_key_as_the_kafka_key() -> None:
    event = EventEnvelope.new("widget.created", source="widgets", key="w-1", payload={})
    message = OutgoingMessage(TOPIC, event.key, event.to_bytes())

    assert message.key == "w-1"
