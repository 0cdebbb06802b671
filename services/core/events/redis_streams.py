"""Redis Streams as the bus: the embedded default, with Kafka's consumer-group semantics.

One stream per topic; each consumer group reads new entries with ``XREADGROUP`` and
acknowledges with ``XACK``. Entries a consumer took but never acknowledged (it crashed)
stay pending and are taken over with ``XAUTOCLAIM`` once idle for ``claim_idle_seconds``;
Redis counts those deliveries, which is how a message that kills its consumer every time is
recognised and dead-lettered instead of crashing the group forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.core.events.bus import EventBus, IncomingMessage, OutgoingMessage, Subscription

log = logging.getLogger(__name__)

#: An ``XREADGROUP`` reply as the core's clients get it (RESP2, replies not decoded):
#: ``[[stream, [(entry_id, {field: value}), ...]], ...]``, or None when the block timed out.
_ReadGroupReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None


class RedisStreamsBus(EventBus):
    name = "redis"

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "",
        consumer: str,
        max_stream_length: int | None = 1_000_000,
        claim_idle_seconds: float = 30.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.consumer = consumer
        # Approximate trimming keeps memory bounded; it is far above what any group lags by.
        self.max_stream_length = max_stream_length
        self.claim_idle_seconds = claim_idle_seconds

    def stream(self, topic: str) -> str:
        return self.prefix + topic

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.xadd(
                    self.stream(message.topic),
                    {"key": message.key.encode(), "value": message.value},
                    maxlen=self.max_stream_length,
                    approximate=True,
                )
            await pipe.execute()

    async def subscribe(self, topic: str, group: str) -> Subscription:
        subscription = RedisStreamSubscription(self, topic, group)
        await subscription.ensure_group()
        return subscription

    async def ping(self) -> None:
        await self.redis.ping()


class RedisStreamSubscription(Subscription):
    def __init__(self, bus: RedisStreamsBus, topic: str, group: str) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.stream = bus.stream(topic)
        self._next_claim = 0.0

    async def ensure_group(self) -> None:
        """Create the group at the stream's start (id 0), so nothing published before the
        consumer first ran is missed."""
        try:
            await self.bus.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def fetch(self, max_messages: int, wait_seconds: float) -> list[IncomingMessage]:
        try:
            claimed = await self._claim_abandoned(max_messages)
            if claimed:
                return claimed
            reply = cast(_ReadGroupReply, await self.bus.redis.xreadgroup(
                self.group, self.bus.consumer, {self.stream: ">"},
                count=max_messages, block=max(1, int(wait_seconds * 1000)),
            ))
        except ResponseError as exc:
            # The stream or group vanished (Redis restarted without persistence): recreate.
            if "NOGROUP" in str(exc):
                log.warning("consumer group %s on %s vanished; recreating", self.group,
                            self.stream)
                await self.ensure_group()
                return []
            raise
        return [self._message(entry_id, fields, 1)
                for _, entries in reply or [] for entry_id, fields in entries]

    async def _claim_abandoned(self, max_messages: int) -> list[IncomingMessage]:
        """Take over entries other (dead) consumers left pending, with their delivery counts."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + max(1.0, self.bus.claim_idle_seconds / 4)
        redis = self.bus.redis
        reply = await redis.xautoclaim(
            self.stream, self.group, self.bus.consumer,
            min_idle_time=int(self.bus.claim_idle_seconds * 1000), start_id="0-0",
            count=max_messages,
        )
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if not entries:
            return []
        pending = await redis.xpending_range(
            self.stream, self.group, min=entries[0][0], max=entries[-1][0],
            count=len(entries) * 4 + 10, consumername=self.bus.consumer,
        )
        counts = {item["message_id"]: int(item["times_delivered"]) for item in pending}
        log.info("claimed %d abandoned message(s) on %s for %s", len(entries), self.stream,
                 self.group)
        return [self._message(entry_id, fields, counts.get(entry_id, 2))
                for entry_id, fields in entries]

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes],
                 delivery_count: int) -> IncomingMessage:
        key = fields.get(b"key")
        return IncomingMessage(
            topic=self.topic, key=key.decode() if key is not None else None,
            value=fields.get(b"value", b""), delivery_count=delivery_count, position=entry_id,
        )

    async def ack(self, messages: Sequence[IncomingMessage]) -> None:
        if messages:
            await self.bus.redis.xack(self.stream, self.group, *[m.position for m in messages])

    async def close(self) -> None:
        """Nothing to release: the group and its pending list live in Redis."""
