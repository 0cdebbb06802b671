"""The saga's rows on real PostgreSQL: a step that moves the order writes the saga, the
order's status and a timeline row together; one that does not writes the saga alone; the
objects the caller holds read as what was written, and nothing is left for a flush."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from services.core.db import Database, create_engine
from services.core.migrations import upgrade
from services.order import saga_rows
from services.order.models import MIGRATIONS, Order, OrderStatusChange, SagaRecord
from services.order.saga import Saga, SagaPolicy, Step, StepSucceeded, advance, start
from tests.services.support import unique

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def database(order_database_url: str) -> AsyncIterator[Database]:
    schema = unique("saga_rows")
    database = Database(create_engine(order_database_url, schema), schema)
    await upgrade(database, MIGRATIONS)
    yield database
    await database.dispose()


async def placed_order(database: Database) -> uuid.UUID:
    order_id = uuid.uuid4()
    async with database.session() as session, session.begin():
        order = await session.scalar(insert(Order).values(
            id=order_id, owner="shopper", idempotency_key=order_id.hex, status="PENDING",
            currency="usd", total=100, lines=[], payment_method="pm_card_visa",
            shipping_address={}).returning(Order))
        assert order is not None
        saga = start(str(order_id), datetime.now(UTC), SagaPolicy()).saga
        await saga_rows.start(session, order, saga, datetime.now(UTC), note="order placed")
    return order_id


async def timeline(database: Database, order_id: uuid.UUID) -> list[tuple[str, str | None]]:
    async with database.session() as session:
        rows = await session.execute(
            select(OrderStatusChange.status, OrderStatusChange.note)
            .where(OrderStatusChange.order_id == order_id).order_by(OrderStatusChange.id))
        return [(status, note) for status, note in rows]


async def stored(database: Database, order_id: uuid.UUID) -> tuple[Order, SagaRecord]:
    """The order and its saga as a fresh session reads them."""
    async with database.session() as session:
        order = await session.get(Order, order_id)
        record = await session.get(SagaRecord, order_id)
    assert order is not None and record is not None
    return order, record


async def test_start_writes_the_saga_row_and_the_first_timeline_row(database: Database) -> None:
    order_id = await placed_order(database)
    _, record = await stored(database, order_id)
    assert record.state["state"] == "PENDING"
    assert record.settled is False and record.deadline is not None
    assert await timeline(database, order_id) == [("PENDING", "order placed")]


async def test_a_moving_step_writes_saga_status_and_timeline_and_leaves_nothing_to_flush(
        database: Database) -> None:
    order_id = await placed_order(database)
    now = datetime.now(UTC)
    async with database.session() as session, session.begin():
        locked = await saga_rows.lock(session, order_id)
        assert locked is not None
        record, order = locked
        saga = advance(Saga.from_dict(record.state), StepSucceeded(Step.RESERVE_INVENTORY, "r-1"),
                       now, SagaPolicy()).saga
        await saga_rows.save(session, record, order, saga, now, moved=True)
        # What the caller holds reads as written, and the ORM has nothing left to write.
        assert (order.status, record.state) == ("INVENTORY_RESERVED", saga.to_dict())
        assert order.updated_at == now and not session.dirty
    order, record = await stored(database, order_id)
    assert (order.status, order.updated_at) == ("INVENTORY_RESERVED", now)
    assert record.state == saga.to_dict() and record.updated_at == now
    assert await timeline(database, order_id) == [("PENDING", "order placed"),
                                                  ("INVENTORY_RESERVED", None)]


async def test_a_step_that_does_not_move_the_order_writes_only_the_saga(
        database: Database) -> None:
    order_id = await placed_order(database)
    later = datetime.now(UTC)
    async with database.session() as session, session.begin():
        locked = await saga_rows.lock(session, order_id)
        assert locked is not None
        record, order = locked
        saga = Saga.from_dict(record.state)
        await saga_rows.save(session, record, order, saga, later, moved=False)
    order, record = await stored(database, order_id)
    assert order.status == "PENDING" and order.updated_at != later
    assert record.updated_at == later
    assert await timeline(database, order_id) == [("PENDING", "order placed")]

