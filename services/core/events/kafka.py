"""Kafka as the bus (production), with aiokafka.

The producer is idempotent with ``acks=all``, so a publish that returns is on every in-sync
replica and a retried send is not written twice. Consumers never auto-commit: offsets are
committed only after the consumer runtime has handled (or dead-lettered) a message, which is
what makes delivery at-least-once. The key picks the partition, so one aggregate's events
stay in order. Topics are created on first use (the broker may forbid auto-creation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

# What comes from aiokafka is Any to the checker.
from aiokafka import (  # type: ignore[import-untyped]  # aiokafka: no py.typed, no stubs
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import (  # type: ignore[import-untyped]  # aiokafka: no py.typed, no stubs
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.errors import (  # type: ignore[import-untyped]  # aiokafka: no py.typed, no stubs
    CommitFailedError,
    KafkaError,
)

from services.core.events.bus import (
    EventBus,
    IncomingMessage,
    OutgoingMessage,
    Subscription,
    dead_letter_topic,
)

log = logging.getLogger(__name__)


class KafkaBus(EventBus):
    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        prefix: str = "",
        client_id: str = "kommerce",
        partitions: int = 3,
        replication_factor: int = 1,
        request_timeout_seconds: float = 30.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.client_id = client_id
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.request_timeout_ms = int(request_timeout_seconds * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._known_topics: set[str] = set()

    def topic_name(self, topic: str) -> str:
        return self.prefix + topic

    async def _ensure_producer(self) -> AIOKafkaProducer:
        """Connect on first use, so a service starts (and reports not-ready) while Kafka is
        down instead of crash-looping."""
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                    acks="all", enable_idempotence=True, linger_ms=2,
                    request_timeout_ms=self.request_timeout_ms,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics (already existing ones are fine)."""
        missing = [t for t in topics if t not in self._known_topics]
        if not missing:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                    client_id=f"{self.client_id}-admin",
                                    request_timeout_ms=self.request_timeout_ms)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            to_create = [t for t in missing if t not in existing]
            if to_create:
                await admin.create_topics([
                    NewTopic(t, num_partitions=self.partitions,
                             replication_factor=self.replication_factor)
                    for t in to_create
                ])
        finally:
            await admin.close()
        self._known_topics.update(missing)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        producer = await self._ensure_producer()
        await self.ensure_topics(sorted({self.topic_name(m.topic) for m in messages}))
        # Queue everything, then wait: the producer batches per partition, keeps order per
        # key, and a failure of any send fails the whole publish (the outbox retries it).
        pending = [
            await producer.send(self.topic_name(m.topic), m.value, key=m.key.encode())
            for m in messages
        ]
        await asyncio.gather(*pending)

    async def subscribe(self, topic: str, group: str) -> Subscription:
        name = self.topic_name(topic)
        await self.ensure_topics([name, self.topic_name(dead_letter_topic(topic))])
        consumer = AIOKafkaConsumer(
            name, bootstrap_servers=self.bootstrap_servers, group_id=group,
            client_id=f"{self.client_id}-{group}", enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            request_timeout_ms=self.request_timeout_ms,
        )
        await consumer.start()
        return KafkaSubscription(consumer, topic)

    async def ping(self) -> None:
        producer = await self._ensure_producer()
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=5)

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


class KafkaSubscription(Subscription):
    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic

    async def fetch(self, max_messages: int, wait_seconds: float) -> list[IncomingMessage]:
        batches = await self.consumer.getmany(timeout_ms=int(wait_seconds * 1000),
                                              max_records=max_messages)
        return [
            IncomingMessage(
                topic=self.topic, key=record.key.decode() if record.key else None,
                value=record.value or b"", position=(tp, record.offset),
            )
            for tp, records in batches.items() for record in records
        ]

    async def ack(self, messages: Sequence[IncomingMessage]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for message in messages:
            tp, offset = message.position
            offsets[tp] = max(offsets.get(tp, 0), offset + 1)
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced under us; the new owner re-reads from the last commit,
            # and the idempotent consumer absorbs the repeat.
            log.warning("offset commit lost to a rebalance: %s", exc)

    async def close(self) -> None:
        try:
            await self.consumer.stop()
        except KafkaError as exc:  # pragma: no cover - best effort on shutdown
            log.warning("kafka consumer did not stop cleanly: %s", exc)
