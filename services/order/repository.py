"""SQL for orders, their timeline and their sagas: module functions on the caller's
session, or on the asyncpg connection under it, which owns the transaction.

Orders and their timeline are read and written through the ORM (checkout's insert, the
history and detail pages, a delivery). The saga's rows — locking a saga with its order,
starting one, saving a step, keeping a payment event it refused — are hand-written
statements sent with asyncpg itself, on the connection of the caller's transaction (a
session's, see :func:`connection_of`, or one the orchestrator opened for an inline step),
because every step of every checkout runs them:

* a step is four round trips — BEGIN, the lock, the save, COMMIT — however much it writes:
  the saga, the order's status, its timeline row and the step's events for the outbox go
  in one statement (data-modifying CTEs and an ``unnest`` of the events);
* the ORM and SQLAlchemy's execution layer stay out of it, and the order a step reads is a
  plain :class:`SagaOrder`: on this path their CPU cost per step outweighed the
  statements' own.

JSON goes over the wire as text, cast in SQL, so the saga's statements do not depend on
the JSON codecs SQLAlchemy installs on its connections.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from asyncpg import Connection
from sqlalchemy import literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from services.core.events import outbox
from services.core.events.envelope import EventEnvelope
from services.core.pci import mask_card_numbers
from services.order.models import Order, OrderStatusChange, SagaRecord
from services.order.saga import Saga

# -- orders and their timeline (ORM) ---------------------------------------------------------


async def insert_order(session: AsyncSession, values: dict[str, Any]) -> Order | None:
    """Insert the order unless its owner already placed one under the same idempotency
    key; None then. The unique constraint, not a look-up first, is what makes the same key
    sent twice at the same instant one order: the second insert waits for the first to
    commit and then conflicts."""
    return await session.scalar(
        insert(Order).values(**values)
        .on_conflict_do_nothing(constraint="uq_orders_owner_idempotency_key")
        .returning(Order))


async def order_by_key(session: AsyncSession, owner: str, key: str) -> Order | None:
    query = select(Order).where(Order.owner == owner, Order.idempotency_key == key)
    return (await session.execute(query)).scalar_one_or_none()


async def order_by_id(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    return await session.get(Order, order_id)


async def lock_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order, row-locked until the transaction ends, for a status change made outside
    the saga (a delivery): of two such events for one order, the second waits and then
    sees the status the first wrote."""
    query = select(Order).where(Order.id == order_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def orders_of(session: AsyncSession, owner: str, limit: int, *,
                    older_than: Order | None = None) -> list[Order]:
    """The owner's orders, newest first; after ``older_than`` when given, so a page is
    anchored on an order rather than an offset that shifts as new orders arrive."""
    query = select(Order).where(Order.owner == owner)
    if older_than is not None:
        query = query.where(Order.created_at < older_than.created_at)
    query = query.order_by(Order.created_at.desc(), Order.id).limit(limit)
    return list((await session.execute(query)).scalars())


async def timeline(session: AsyncSession, order_id: uuid.UUID) -> list[OrderStatusChange]:
    """Every status the order reached, in the order they were written."""
    query = (select(OrderStatusChange).where(OrderStatusChange.order_id == order_id)
             .order_by(OrderStatusChange.id))
    return list((await session.execute(query)).scalars())


def move_order(session: AsyncSession, order: Order, status: str, note: str | None) -> None:
    """Give a locked order a status the saga does not decide (DELIVERED, a tracking status
    after it) and its timeline row, both written with the caller's transaction."""
    order.status = status
    order.updated_at = datetime.now(UTC)
    session.add(OrderStatusChange(order_id=order.id, status=status, note=note))


async def due_sagas(session: AsyncSession, now: datetime, limit: int) -> Sequence[uuid.UUID]:
    """The orders of unsettled sagas past their deadline at ``now``, earliest first, their
    saga rows locked; rows another timer pass holds are skipped rather than waited for, so
    several instances of the service can tick at once."""
    return (await session.execute(
        select(SagaRecord.order_id)
        .where(SagaRecord.settled.is_(False), SagaRecord.deadline <= now)
        .order_by(SagaRecord.deadline).limit(limit)
        .with_for_update(skip_locked=True))).scalars().all()


# -- the saga's rows (asyncpg) ---------------------------------------------------------------

_LOCK = """
SELECT s.state::text AS saga_state, o.id, o.owner, o.status, o.reason, o.currency, o.total,
       o.lines::text AS lines, o.payment_method, o.shipping_address::text AS shipping_address
FROM sagas s JOIN orders o ON o.id = s.order_id
WHERE s.order_id = $1
FOR UPDATE OF s
"""

# $1 order id, $2-$5 the saga (state as JSON text, deadline, settled, now), then the
# order's status and note ($6, $7) where the statement writes them, then the events' five
# arrays (services.core.events.outbox.event_arrays).
_SAVE_SAGA = """saved_saga AS (
    UPDATE sagas SET state = $2::text::jsonb, deadline = $3, settled = $4, updated_at = $5
    WHERE order_id = $1)"""
_MOVE_ORDER = """moved_order AS (
    UPDATE orders SET status = $6, reason = $7, updated_at = $5 WHERE id = $1)"""
_START_SAGA = """started_saga AS (
    INSERT INTO sagas (order_id, state, deadline, settled, updated_at)
    VALUES ($1, $2::text::jsonb, $3, $4, $5))"""
_TIMELINE = """timeline AS (
    INSERT INTO order_status_history (order_id, status, note) VALUES ($1, $6, $7))"""
_SAVE = f"WITH {_SAVE_SAGA} {outbox.insert_from_arrays(first_parameter=6)}"
_SAVE_AND_MOVE = (f"WITH {_SAVE_SAGA}, {_MOVE_ORDER}, {_TIMELINE} "
                  f"{outbox.insert_from_arrays(first_parameter=8)}")
_START = f"WITH {_START_SAGA}, {_TIMELINE} {outbox.insert_from_arrays(first_parameter=8)}"

_REJECT = """
INSERT INTO payment_event_rejections (order_id, event_id, event_type, source, reason,
                                      payment_id, intent_id, amount, currency)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

_BEGIN = select(literal(1))


async def connection_of(session: AsyncSession) -> Connection:
    """The asyncpg connection under ``session``, inside the session's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN together with a session's first statement; a
    statement sent on the bare connection before that would run outside the transaction,
    so a session that has sent nothing yet is made to begin first.
    """
    connection = await session.connection()
    driver = await driver_of(connection)
    if not driver.is_in_transaction():
        await connection.execute(_BEGIN)
    return driver


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Connection]:
    """A connection from ``engine``'s pool in a transaction of its own (asyncpg's), which
    commits when the block ends and rolls back when it raises."""
    async with engine.connect() as connection:
        conn = await driver_of(connection)
        try:
            async with conn.transaction():
                yield conn
        finally:
            if conn.is_in_transaction():
                # Cut off during the rollback itself (a cancellation): the pool does not
                # know of this transaction, so the connection must not go back open.
                await connection.invalidate()


async def driver_of(connection: AsyncConnection) -> Connection:
    """The asyncpg connection a SQLAlchemy connection holds from its pool."""
    raw = await connection.get_raw_connection()
    driver: Connection = raw.driver_connection
    return driver


@dataclass(slots=True)
class SagaOrder:
    """What a saga step knows of its order, read with the saga's lock: what the
    participants need to carry out a command and the status events carry. A plain object
    rather than the mapped :class:`~services.order.models.Order`, whose construction on
    this path would cost more CPU than the read itself."""

    id: uuid.UUID
    owner: str
    status: str
    reason: str | None
    currency: str
    total: int
    lines: list[dict[str, Any]]
    payment_method: str
    shipping_address: dict[str, Any]


async def lock_saga(conn: Connection, order_id: uuid.UUID) -> tuple[Saga, SagaOrder] | None:
    """The saga and its order in one round trip; only the saga row is locked, and every
    writer of the order takes that lock first."""
    row = await conn.fetchrow(_LOCK, order_id)
    if row is None:
        return None
    saga = Saga.from_dict(orjson.loads(row["saga_state"]))
    order = SagaOrder(id=row["id"], owner=row["owner"], status=row["status"],
                      reason=row["reason"], currency=row["currency"], total=row["total"],
                      lines=orjson.loads(row["lines"]), payment_method=row["payment_method"],
                      shipping_address=orjson.loads(row["shipping_address"]))
    return saga, order


async def start_saga(conn: Connection, order_id: uuid.UUID, saga: Saga, now: datetime, *,
                status: str, note: str, events: Sequence[EventEnvelope]) -> None:
    """The saga row of a freshly inserted order, the order's first timeline row and the
    saga's first events."""
    await conn.execute(_START, *_saga_parameters(order_id, saga, now), status, note,
                       *outbox.event_arrays(events))


async def save_saga(conn: Connection, order: SagaOrder, saga: Saga, now: datetime, *, moved: bool,
               events: Sequence[EventEnvelope]) -> None:
    """Store the saga and the step's events; when ``moved``, also the order's new status
    (the saga's state, with its reason) and a timeline row for it. ``order`` is brought up
    to date with what was written."""
    saga_parameters = _saga_parameters(order.id, saga, now)
    if not moved:
        await conn.execute(_SAVE, *saga_parameters, *outbox.event_arrays(events))
        return
    await conn.execute(_SAVE_AND_MOVE, *saga_parameters, saga.state.value, saga.reason,
                       *outbox.event_arrays(events))
    order.status, order.reason = saga.state.value, saga.reason


def _saga_parameters(order_id: uuid.UUID, saga: Saga, now: datetime) -> tuple[Any, ...]:
    settled = saga.is_settled
    return (order_id, orjson.dumps(saga.to_dict()).decode(),
            None if settled else saga.deadline, settled, now)


@dataclass(frozen=True, slots=True)
class RefusedPayment:
    """A payment event or answer the saga refused, as :func:`record_refusal` keeps it:
    every claimed value as text (masked of card numbers, cut to its column's length)."""

    reason: str
    event_type: str
    order_id: object = None
    event_id: object = None
    source: object = None
    payment_id: object = None
    intent_id: object = None
    amount: object = None
    currency: object = None

    def columns(self) -> tuple[str | None, ...]:
        return (_text(self.order_id, 100), _text(self.event_id, 100),
                _text(self.event_type, 100) or "?", _text(self.source, 100), self.reason,
                _text(self.payment_id, 100), _text(self.intent_id, 255),
                _text(self.amount, 32), _text(self.currency, 8))


def _text(value: object, length: int) -> str | None:
    """A claimed value as stored: forged events may put anything anywhere, a card number
    included, so it is masked before it is cut."""
    if value is None:
        return None
    return mask_card_numbers(str(value))[:length]


async def record_refusal(conn: Connection, refused: RefusedPayment) -> None:
    """Keep a refused payment event in the caller's transaction."""
    await conn.execute(_REJECT, *refused.columns())
