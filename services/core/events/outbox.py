"""The transactional outbox: events are rows written with the data, published afterwards.

``add_event(session, envelope)`` inserts the event into ``outbox`` inside the caller's
transaction, so the event exists if and only if the data change committed. The
:class:`OutboxRelay` then publishes pending rows and marks them sent. Several relays (one per
replica) share the table safely: each batch is taken with ``SELECT … FOR UPDATE SKIP
LOCKED``, so a row is in one relay's hands at a time, and a crash between publish and mark
only causes a re-publish, which idempotent consumers absorb.

A commit that added events wakes this process's relays at once (no waiting for the next
poll); other replicas' relays find the rows on their next poll.

Order: one relay publishes in commit-sequence order, and Kafka keeps that order per key.
With several relays, two batches can overlap in time, so a consumer that must apply one
aggregate's events in order should carry a version in the payload and ignore stale ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

import orjson
from sqlalchemy import Row, delete, event, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.core.db import Database
from services.core.events.bus import EventBus, OutgoingMessage
from services.core.events.envelope import EventEnvelope
from services.core.events.tables import outbox
from services.core.metrics import counter, gauge

log = logging.getLogger(__name__)

_PENDING_FLAG = "kommerce.outbox.pending"
_PENDING_ROWS = "kommerce.outbox.rows"
_relays: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()

OUTBOX_PUBLISHED = counter("outbox_published_total", "Outbox events published", ["topic"])
OUTBOX_PUBLISH_FAILURES = counter("outbox_publish_failures_total",
                                  "Outbox batches the bus refused")
OUTBOX_LAG = gauge("outbox_oldest_pending_seconds",
                   "Age of the oldest unpublished outbox row at the last relay pass",
                   ["schema"])


def default_topic(envelope: EventEnvelope) -> str:
    """Each service publishes on its own topic, ``<source>.events``."""
    return f"{envelope.source}.events"


async def add_event(session: AsyncSession, envelope: EventEnvelope,
                    topic: str | None = None) -> None:
    """Publish ``envelope`` as part of the session's current transaction.

    The one way a service publishes an event: nothing reaches the bus unless (and until)
    the transaction commits. The row is written just before the commit, together with the
    transaction's other events in one statement (a saga step or a reservation publishes
    two or three), rather than one round trip each.
    """
    session.sync_session.info.setdefault(_PENDING_ROWS, []).append(outbox_row(envelope, topic))


def outbox_row(envelope: EventEnvelope, topic: str | None = None) -> dict[str, Any]:
    """The outbox row :func:`add_event` queues for ``envelope``: its topic (the type's
    default unless named), key and type, as the relay will send them."""
    return {
        "event_id": envelope.id,
        "topic": topic or default_topic(envelope),
        "event_key": envelope.key,
        "event_type": envelope.type,
        "envelope": envelope.to_json(),
    }


#: Built once: every commit that publishes runs it.
_INSERT_ROWS = outbox.insert()


def insert_from_arrays(first_parameter: int) -> str:
    """``INSERT INTO outbox … SELECT … FROM unnest(…)`` taking the five arrays of
    :func:`event_arrays` as ``$first_parameter`` onwards: for a hand-written statement
    (asyncpg) that writes its events itself, in the same round trip as its data. The
    transaction must then wake the relays when it commits (:func:`wake_after_commit`,
    :func:`wake_relays`)."""
    n = first_parameter
    return ("INSERT INTO outbox (event_id, topic, event_key, event_type, envelope) "
            "SELECT event_id, topic, event_key, event_type, envelope::jsonb FROM unnest("
            f"${n}::uuid[], ${n + 1}::text[], ${n + 2}::text[], ${n + 3}::text[], "
            f"${n + 4}::text[]) AS events(event_id, topic, event_key, event_type, envelope)")


def event_arrays(envelopes: Sequence[EventEnvelope], topic: str | None = None,
                 ) -> tuple[list[uuid.UUID], list[str], list[str], list[str], list[str]]:
    """The events as the five arrays :func:`insert_from_arrays` takes (the envelope as
    JSON text)."""
    return ([envelope.id for envelope in envelopes],
            [topic or default_topic(envelope) for envelope in envelopes],
            [envelope.key for envelope in envelopes],
            [envelope.type for envelope in envelopes],
            [orjson.dumps(envelope.to_json()).decode() for envelope in envelopes])


def wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's relays once the session's transaction commits: for events it
    wrote without :func:`add_event`."""
    session.sync_session.info[_PENDING_FLAG] = True


def wake_relays() -> None:
    """Wake this process's relays now: events just committed outside any session."""
    for relay in list(_relays):
        relay.wake()


@event.listens_for(Session, "before_commit")
def _write_pending_events(session: Session) -> None:
    rows = session.info.pop(_PENDING_ROWS, None)
    if rows:
        session.execute(_INSERT_ROWS, rows)
        session.info[_PENDING_FLAG] = True


@event.listens_for(Session, "after_commit")
def _wake_relays_after_commit(session: Session) -> None:
    if session.info.pop(_PENDING_FLAG, False):
        wake_relays()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_events(session: Session) -> None:
    session.info.pop(_PENDING_ROWS, None)
    session.info.pop(_PENDING_FLAG, None)


class OutboxRelay:
    """Publishes pending outbox rows of one database schema to the bus."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        *,
        batch_size: int = 200,
        poll_interval: float = 0.5,
        linger_seconds: float = 0.1,
        retention: timedelta = timedelta(days=3),
        purge_every_seconds: float = 600.0,
    ) -> None:
        self.database = database
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        #: Like Kafka's ``linger.ms``: a commit's events wait this long for company, so a
        #: busy service publishes batches rather than a pass (three statements and a
        #: produce request) per commit; a longer linger cost less CPU per order in
        #: ``bench/checkout.py`` (the README's design measurements).
        self.linger_seconds = linger_seconds
        self.retention = retention
        self.purge_every_seconds = purge_every_seconds
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_purge = 0.0
        _relays.add(self)

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were published (0: nothing pending).

        One statement takes the batch and marks it sent (``UPDATE … WHERE seq IN (SELECT …
        FOR UPDATE SKIP LOCKED) RETURNING``); the mark commits only after the bus accepted
        the batch. Raises when the bus refuses it; the rows stay pending, with the attempt
        and error recorded for operators.
        """
        picked = (select(outbox.c.seq).where(outbox.c.published_at.is_(None))
                  .order_by(outbox.c.seq).limit(self.batch_size)
                  .with_for_update(skip_locked=True))
        rows: list[Row[Any]] = []
        sent = False
        try:
            async with self.database.session() as session, session.begin():
                rows = sorted((await session.execute(
                    update(outbox).where(outbox.c.seq.in_(picked.scalar_subquery()))
                    .values(published_at=func.now())
                    .returning(outbox.c.seq, outbox.c.topic, outbox.c.event_key,
                               outbox.c.envelope, outbox.c.created_at)
                )).all(), key=lambda row: row.seq)
                if rows:
                    await self.bus.publish([
                        OutgoingMessage(row.topic, row.event_key, orjson.dumps(row.envelope))
                        for row in rows
                    ])
                    sent = True
        except Exception as exc:
            if rows and not sent:  # the bus refused: the mark rolled back with the raise
                OUTBOX_PUBLISH_FAILURES.inc()
                await self._record_refusal([row.seq for row in rows], exc)
            raise
        if not rows:
            OUTBOX_LAG.labels(self.database.schema).set(0)
            return 0
        oldest = rows[0].created_at
        OUTBOX_LAG.labels(self.database.schema).set(
            max(0.0, time.time() - oldest.timestamp()))
        for row in rows:
            OUTBOX_PUBLISHED.labels(row.topic).inc()
        return len(rows)

    async def _record_refusal(self, seqs: list[int], error: Exception) -> None:
        async with self.database.session() as session, session.begin():
            await session.execute(
                update(outbox).where(outbox.c.seq.in_(seqs), outbox.c.published_at.is_(None))
                .values(attempts=outbox.c.attempts + 1, last_error=str(error)[:2000])
            )

    async def purge_published(self) -> int:
        """Delete rows published longer ago than the retention (they are on the bus)."""
        async with self.database.session() as session, session.begin():
            # A DELETE's result is a CursorResult (the only kind with a rowcount).
            result = cast("CursorResult[Any]", await session.execute(
                delete(outbox).where(
                    outbox.c.published_at < func.now() - self.retention
                )
            ))
        return int(result.rowcount or 0)

    async def run(self) -> None:
        """Publish until stopped; back off while the database or bus is down."""
        failures = 0
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                published = await self.publish_pending()
                failures = 0
                await self._maybe_purge()
            except Exception as exc:
                failures += 1
                delay = min(10.0, 0.1 * 2 ** min(failures, 7))
                log.warning("outbox relay pass failed (%s); next try in %.1fs", exc, delay)
                await self._wait(delay)
                continue
            if published < self.batch_size and await self._wait(self.poll_interval) \
                    and self.linger_seconds:
                # Woken by a commit: let the commits right behind it join the batch.
                await asyncio.sleep(self.linger_seconds)

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_every_seconds
            purged = await self.purge_published()
            if purged:
                log.info("purged %d published outbox row(s)", purged)

    async def _wait(self, seconds: float) -> bool:
        """Wait for a wake-up or ``seconds``; True when woken."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
