"""The bus interface both backends implement, and the one place a backend is chosen.

A bus moves opaque bytes under a key on named topics; everything event-shaped (envelopes,
idempotency, retries, dead letters) lives above it in :mod:`.consumer` and :mod:`.outbox`,
so Redis Streams and Kafka behave the same to a service. Topic names given to a bus are
logical (``product.events``); the bus adds the platform prefix.
"""

from __future__ import annotations

import abc
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core.settings import ServiceSettings

DEAD_LETTER_SUFFIX = ".dlq"


def dead_letter_topic(topic: str) -> str:
    return topic + DEAD_LETTER_SUFFIX


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: str
    value: bytes


@dataclass(frozen=True)
class IncomingMessage:
    """One delivery. ``delivery_count`` is how often the bus has handed this message to the
    group (Redis knows; Kafka does not and always says 1)."""

    topic: str
    key: str | None
    value: bytes
    delivery_count: int = 1
    position: Any = field(default=None, compare=False)


class Subscription(abc.ABC):
    """A consumer group's view of one topic: fetch, then acknowledge what was handled."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int, wait_seconds: float) -> list[IncomingMessage]:
        """Up to ``max_messages``, waiting at most ``wait_seconds`` for the first one."""

    @abc.abstractmethod
    async def ack(self, messages: Sequence[IncomingMessage]) -> None:
        """Mark handled; an unacknowledged message is delivered again."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class EventBus(abc.ABC):
    name: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; backends that connect lazily need not override."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and disconnect."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish all or raise; on success every message is durably on the bus."""

    @abc.abstractmethod
    async def subscribe(self, topic: str, group: str) -> Subscription: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise when the bus cannot be reached (for ``/ready``)."""


def consumer_name(service: str) -> str:
    """Unique per process, so a restarted pod never inherits a dead one's identity."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def bus_from_settings(settings: ServiceSettings, redis: Any = None) -> EventBus:
    """The configured backend: Redis Streams (sharing the service's Redis client) or Kafka."""
    if settings.event_bus == "kafka":
        from services.core.events.kafka import KafkaBus  # optional backend

        return KafkaBus(settings.kafka_bootstrap_servers, prefix=settings.event_topic_prefix,
                        client_id=settings.service_name,
                        partitions=settings.kafka_topic_partitions,
                        replication_factor=settings.kafka_replication_factor)
    from services.core.events.redis_streams import RedisStreamsBus

    if redis is None:
        raise ValueError("the redis event bus needs the service's Redis client")
    return RedisStreamsBus(redis, prefix=settings.event_topic_prefix,
                           consumer=consumer_name(settings.service_name))
