"""Consuming events: idempotent handlers, retries, and dead letters for poison events.

The loop acknowledges a message only after its handler's transaction committed (or after
it went to the dead-letter topic), so delivery is at-least-once; :func:`idempotent` records
each event id in ``processed_events`` inside that same transaction, so a redelivered event
changes nothing the second time.

Failures are sorted into three kinds:

* **poison** - the bytes are not an envelope, or the payload fails its contract: it will
  never succeed, so it goes straight to ``<topic>.dlq`` with the error;
* **transient** - the database, Redis, the bus or a called service is unreachable: retried
  with backoff for as long as it takes, never dead-lettered (an outage must not lose events);
* **anything else** - retried up to ``max_attempts``, then dead-lettered with the error.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pydantic
from opentelemetry import context as otel_context
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.base import InvalidPayload
from services.core.db import Database
from services.core.events.bus import (
    EventBus,
    IncomingMessage,
    OutgoingMessage,
    Subscription,
    dead_letter_topic,
)
from services.core.events.envelope import EventEnvelope, InvalidEvent
from services.core.events.tables import processed_events
from services.core.logging import bind_request_id
from services.core.metrics import counter
from services.core.tracing import extract_context
from services.core.transient import is_transient

log = logging.getLogger(__name__)

EnvelopeHandler = Callable[[EventEnvelope], Awaitable[None]]
SessionHandler = Callable[[AsyncSession, EventEnvelope], Awaitable[None]]

EVENTS_CONSUMED = counter(
    "events_consumed_total", "Events taken off the bus by outcome "
    "(handled, duplicate, ignored, dead_lettered)", ["topic", "group", "outcome"],
)
EVENT_FAILURES = counter(
    "event_handler_failures_total", "Handler failures by kind (poison, transient, error)",
    ["topic", "group", "kind"],
)


class PoisonEvent(Exception):
    """Raise from a handler for an event that can never succeed (dead-lettered at once)."""


def is_poison(exc: BaseException) -> bool:
    """Whether ``exc`` says the event can never be handled: not an envelope, or a payload
    its contract (:mod:`kommerce.contracts.events`) refuses."""
    return isinstance(exc, PoisonEvent | InvalidEvent | InvalidPayload | pydantic.ValidationError)


@dataclass
class EventHandlers:
    """Handlers by event type, for one consumer group; a service's ``events.py`` makes one::

        handlers = EventHandlers()

        @handlers.on("product.updated")
        async def reindex_product(session: AsyncSession, event: EventEnvelope) -> None: ...

    Types without a handler are acknowledged and skipped, so a publisher can add event types
    before its consumers know them.
    """

    handlers: dict[str, SessionHandler] = field(default_factory=dict)
    #: An in-process answer to "was this event's effect already applied here, by another
    #: path?", asked before the idempotency transaction: the order service runs its saga
    #: commands inline, so when the bus delivers the same command the consumer can
    #: acknowledge it without a database round trip. ``False`` means "not known here" and
    #: leaves the decision to the transaction, so a missing answer is never wrong.
    settled: Callable[[EventEnvelope], Awaitable[bool]] | None = None

    def on(self, event_type: str) -> Callable[[SessionHandler], SessionHandler]:
        def register(handler: SessionHandler) -> SessionHandler:
            if event_type in self.handlers:
                raise ValueError(f"two handlers for {event_type}")
            self.handlers[event_type] = handler
            return handler

        return register

    def handles(self, event_type: str) -> bool:
        return event_type in self.handlers

    async def dispatch(self, session: AsyncSession, event: EventEnvelope) -> None:
        await self.handlers[event.type](session, event)


def idempotent(database: Database, group: str, handler: SessionHandler) -> EnvelopeHandler:
    """Run ``handler`` at most once per (group, event id), in one transaction with the mark.

    A concurrent duplicate blocks on the first one's uncommitted row and then finds it;
    if the first rolled back, the duplicate goes ahead. Either way the effect happens once.
    """

    async def handle(event: EventEnvelope) -> None:
        async with database.session() as session, session.begin():
            inserted = await session.execute(
                insert(processed_events)
                .values(consumer_group=group, event_id=event.id, event_type=event.type)
                .on_conflict_do_nothing()
                .returning(processed_events.c.event_id)
            )
            if inserted.first() is None:
                raise _AlreadyProcessed
            await handler(session, event)

    return handle


def unless_settled(settled: Callable[[EventEnvelope], Awaitable[bool]],
                   handler: EnvelopeHandler) -> EnvelopeHandler:
    """``handler``, skipped (and counted as a duplicate) for events ``settled`` vouches for."""

    async def handle(event: EventEnvelope) -> None:
        if await settled(event):
            raise _AlreadyProcessed
        await handler(event)

    return handle


class _AlreadyProcessed(Exception):
    pass


@dataclass
class DeadLetter:
    """What lands on ``<topic>.dlq``: the original bytes and why they could not be handled."""

    topic: str
    group: str
    key: str | None
    error_type: str
    error: str
    attempts: int
    original: bytes

    def to_bytes(self) -> bytes:
        try:
            original: dict[str, str] = {"original": self.original.decode()}
        except UnicodeDecodeError:
            original = {"original_base64": base64.b64encode(self.original).decode()}
        return orjson.dumps({
            "topic": self.topic, "group": self.group, "key": self.key,
            "error_type": self.error_type, "error": self.error[:4000],
            "attempts": self.attempts, "failed_at": datetime.now(UTC).isoformat(),
            **original,
        })


class EventConsumer:
    """Runs one consumer group on one topic until stopped."""

    def __init__(
        self,
        bus: EventBus,
        topic: str,
        group: str,
        handler: EnvelopeHandler,
        *,
        accepts: Callable[[str], bool] = lambda _: True,
        max_attempts: int = 5,
        batch_size: int = 100,
        wait_seconds: float = 1.0,
        retry_base_seconds: float = 0.05,
        retry_max_seconds: float = 10.0,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.handler = handler
        self.accepts = accepts
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self._stopping = asyncio.Event()
        self.running = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Subscribe (retrying while the bus is down), then handle batches until stopped."""
        subscription = await self._subscribe()
        if subscription is None:
            return
        self.running.set()
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    messages = await subscription.fetch(self.batch_size, self.wait_seconds)
                    failures = 0
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    failures += 1
                    log.warning("fetch from %s failed (%s); retrying", self.topic, exc)
                    await self._sleep(self._backoff(failures))
                    continue
                done = await self._handle_batch(messages)
                await self._ack(subscription, done)
        finally:
            self.running.clear()
            await subscription.close()

    async def _subscribe(self) -> Subscription | None:
        failures = 0
        while not self._stopping.is_set():
            try:
                return await self.bus.subscribe(self.topic, self.group)
            except Exception as exc:
                failures += 1
                log.warning("subscribing %s to %s failed (%s); retrying", self.group,
                            self.topic, exc)
                await self._sleep(self._backoff(failures))
        return None

    async def _ack(self, subscription: Subscription, done: list[IncomingMessage]) -> None:
        failures = 0
        while done:
            try:
                await subscription.ack(done)
                return
            except Exception as exc:
                if not is_transient(exc) or self._stopping.is_set():
                    # Unacknowledged messages come back; the idempotent handler absorbs them.
                    log.warning("acknowledging %d message(s) failed: %s", len(done), exc)
                    return
                failures += 1
                await self._sleep(self._backoff(failures))

    async def _handle_batch(self, messages: list[IncomingMessage]) -> list[IncomingMessage]:
        """Handle in order; stop at the first message left unhandled by a shutdown, so only
        a handled prefix is acknowledged."""
        done: list[IncomingMessage] = []
        for message in messages:
            if not await self._handle(message):
                break
            done.append(message)
        return done

    async def _handle(self, message: IncomingMessage) -> bool:
        """True when the message is finished with (handled, skipped or dead-lettered)."""
        try:
            event = EventEnvelope.from_bytes(message.value)
        except InvalidEvent as exc:
            return await self._dead_letter(message, exc, attempts=1, kind="poison")
        if message.delivery_count > self.max_attempts:
            return await self._dead_letter(
                message,
                RuntimeError(f"delivered {message.delivery_count} times without being "
                             "acknowledged (did handling crash the consumer?)"),
                attempts=message.delivery_count, kind="error",
            )
        if not self.accepts(event.type):
            self._count("ignored")
            return True
        bind_request_id(str(event.id))
        token = otel_context.attach(extract_context(event.trace))
        try:
            return await self._handle_with_retries(message, event)
        finally:
            otel_context.detach(token)
            bind_request_id(None)

    async def _handle_with_retries(self, message: IncomingMessage, event: EventEnvelope) -> bool:
        attempts = 0
        transient_failures = 0
        while True:
            try:
                await self.handler(event)
                self._count("handled")
                return True
            except _AlreadyProcessed:
                self._count("duplicate")
                return True
            except Exception as exc:
                if is_poison(exc):
                    EVENT_FAILURES.labels(self.topic, self.group, "poison").inc()
                    return await self._dead_letter(message, exc, attempts + 1, kind="poison")
                if is_transient(exc):
                    EVENT_FAILURES.labels(self.topic, self.group, "transient").inc()
                    transient_failures += 1
                    log.warning("event %s (%s): transient failure, retrying: %s", event.id,
                                event.type, exc)
                    if not await self._sleep(self._backoff(transient_failures)):
                        return False
                    continue
                EVENT_FAILURES.labels(self.topic, self.group, "error").inc()
                attempts += 1
                log.warning("event %s (%s) failed (attempt %d/%d): %r", event.id, event.type,
                            attempts, self.max_attempts, exc)
                if attempts >= self.max_attempts:
                    return await self._dead_letter(message, exc, attempts, kind="error")
                if not await self._sleep(self._backoff(attempts)):
                    return False

    async def _dead_letter(self, message: IncomingMessage, exc: BaseException, attempts: int,
                           kind: str) -> bool:
        letter = DeadLetter(
            topic=message.topic, group=self.group, key=message.key,
            error_type=type(exc).__name__, error=str(exc) or repr(exc), attempts=attempts,
            original=message.value,
        )
        log.error("dead-lettering a message from %s for %s after %d attempt(s) (%s): %s",
                  message.topic, self.group, attempts, kind, letter.error)
        failures = 0
        while True:
            try:
                await self.bus.publish([OutgoingMessage(
                    dead_letter_topic(message.topic), message.key or "", letter.to_bytes())])
                self._count("dead_lettered")
                return True
            except Exception as publish_error:
                failures += 1
                log.warning("dead-letter publish failed (%s); retrying", publish_error)
                if not await self._sleep(self._backoff(failures)):
                    return False

    def _count(self, outcome: str) -> None:
        EVENTS_CONSUMED.labels(self.topic, self.group, outcome).inc()

    def _backoff(self, failures: int) -> float:
        factor: int = 2 ** min(failures - 1, 16)  # int ** int is Any to the checker
        return min(self.retry_max_seconds, self.retry_base_seconds * factor)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; False when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False
