"""The test bed's Kafka is a real broker: clients talk to it, and it keeps what it acknowledged
across a restart, which the outbox and saga tests rely on when they bounce it mid-stream."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kommerce.testbed.kafka import KafkaBroker

pytestmark = pytest.mark.kafka


def unique_topic() -> str:
    """Topics are per test so tests sharing the session broker never read each other's
    messages; auto-creation makes them on first produce."""
    return f"testbed-{uuid.uuid4().hex[:12]}"


async def produce(broker: KafkaBroker, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def consume_one(broker: KafkaBroker, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"{topic}-reader",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=30_000, max_records=1)
        records = [record for batch in batches.values() for record in batch]
        return records[0].value if records else None
    finally:
        await consumer.stop()


async def test_a_produced_message_is_consumed(kafka_broker: KafkaBroker) -> None:
    topic = unique_topic()

    await produce(kafka_broker, topic, b"order-placed")

    assert await consume_one(kafka_broker, topic) == b"order-placed"


async def test_an_acknowledged_message_survives_a_broker_restart(
    kafka_broker: KafkaBroker,
) -> None:
    topic = unique_topic()
    await produce(kafka_broker, topic, b"payment-captured")
    address_before = kafka_broker.bootstrap_servers

    kafka_broker.restart()

    assert kafka_broker.bootstrap_servers == address_before
    assert await consume_one(kafka_broker, topic) == b"payment-captured"
