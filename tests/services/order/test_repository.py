"""The saga's rows on real PostgreSQL: a step that moves the order writes the saga, the
order's status, a timeline row and the step's events in one statement; one that does not
writes the saga and its events alone; the statements run inside the caller's transaction
(a session's, or a bare asyncpg one) and roll back with it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from asyncpg import Connection
from sqlalchemy import insert, select

from services.core.db import Database, create_engine
from services.core.events.envelope import EventEnvelope
from services.core.events.tables import outbox
from services.core.migrations import upgrade
from services.order import repository
from services.order.models import MIGRATIONS, Order, OrderStatusChange, SagaRecord
from services.order.saga import SagaPolicy, Step, StepSucceeded, advance, start
from tests.services.support import unique

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def database(order_database_url: str) -> AsyncIterator[Database]:
    schema = unique("saga_rows")
    database = Database(create_engine(order_database_url, schema), schema)
    await upgrade(database, MIGRATIONS)
    yield database
    await database.dispose()


def an_event(order_id: uuid.UUID, action: str) -> EventEnvelope:
    return EventEnvelope.new("order.saga_command", source="order", key=str(order_id),
                             payload={"order_id": str(order_id), "action": action})


async def placed_order(database: Database) -> uuid.UUID:
    """An order and its started saga, written in one session's transaction (as checkout
    does: the ORM's insert first, then the saga's statement on the same connection)."""
    order_id = uuid.uuid4()
    async with database.session() as session, session.begin():
        order = await session.scalar(insert(Order).values(
            id=order_id, owner="shopper", idempotency_key=order_id.hex, status="PENDING",
            currency="usd", total=100, lines=[{"variant_id": "v", "quantity": 1}],
            payment_method="pm_card_visa", shipping_address={"city": "Lyon"})
            .returning(Order))
        assert order is not None
        saga = start(str(order_id), datetime.now(UTC), SagaPolicy()).saga
        await repository.start_saga(await repository.connection_of(session), order_id, saga,
                              datetime.now(UTC), status="PENDING", note="order placed",
                              events=[an_event(order_id, "reserve_inventory")])
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


async def outbox_actions(database: Database, order_id: uuid.UUID) -> list[str]:
    """The actions of the order's events in the outbox, as the relay would publish them."""
    async with database.session() as session:
        rows = await session.execute(
            select(outbox.c.topic, outbox.c.event_key, outbox.c.envelope)
            .where(outbox.c.event_key == str(order_id)).order_by(outbox.c.seq))
        envelopes = [(topic, key, EventEnvelope.model_validate(envelope))
                     for topic, key, envelope in rows]
    assert all(topic == "order.events" and key == str(order_id)
               for topic, key, _ in envelopes)
    return [envelope.payload["action"] for _, _, envelope in envelopes]


async def reserve_step(conn: Connection, order_id: uuid.UUID, *, events: list[EventEnvelope],
                       moved: bool = True) -> None:
    """Lock the saga and save it: moved on by a successful reservation, or as it was."""
    locked = await repository.lock_saga(conn, order_id)
    assert locked is not None
    saga, order = locked
    if moved:
        saga = advance(saga, StepSucceeded(Step.RESERVE_INVENTORY, "r-1"), datetime.now(UTC),
                       SagaPolicy()).saga
    await repository.save_saga(conn, order, saga, datetime.now(UTC), moved=moved, events=events)


async def test_start_writes_the_saga_row_the_first_timeline_row_and_the_first_command(
        database: Database) -> None:
    order_id = await placed_order(database)
    _, record = await stored(database, order_id)
    assert record.state["state"] == "PENDING"
    assert record.settled is False and record.deadline is not None
    assert await timeline(database, order_id) == [("PENDING", "order placed")]
    assert await outbox_actions(database, order_id) == ["reserve_inventory"]


async def test_a_moving_step_writes_saga_status_timeline_and_events_together(
        database: Database) -> None:
    order_id = await placed_order(database)
    now = datetime.now(UTC)
    async with repository.transaction(database.engine) as conn:
        locked = await repository.lock_saga(conn, order_id)
        assert locked is not None
        saga, order = locked
        assert (order.lines, order.shipping_address) == (
            [{"variant_id": "v", "quantity": 1}], {"city": "Lyon"})
        saga = advance(saga, StepSucceeded(Step.RESERVE_INVENTORY, "r-1"), now,
                       SagaPolicy()).saga
        await repository.save_saga(conn, order, saga, now, moved=True,
                             events=[an_event(order_id, "charge_payment"),
                                     an_event(order_id, "audit")])
        assert order.status == "INVENTORY_RESERVED"
    order_row, record = await stored(database, order_id)
    assert (order_row.status, order_row.updated_at) == ("INVENTORY_RESERVED", now)
    assert record.state == saga.to_dict() and record.updated_at == now
    assert await timeline(database, order_id) == [("PENDING", "order placed"),
                                                  ("INVENTORY_RESERVED", None)]
    assert await outbox_actions(database, order_id) == [
        "reserve_inventory", "charge_payment", "audit"]


async def test_a_step_that_does_not_move_the_order_writes_only_the_saga_and_its_events(
        database: Database) -> None:
    order_id = await placed_order(database)
    later = datetime.now(UTC)
    async with database.session() as session, session.begin():
        # Nothing sent on the session yet: the connection is made to begin first.
        conn = await repository.connection_of(session)
        assert conn.is_in_transaction()
        locked = await repository.lock_saga(conn, order_id)
        assert locked is not None
        saga, order = locked
        await repository.save_saga(conn, order, saga, later, moved=False, events=[])
    order_row, record = await stored(database, order_id)
    assert order_row.status == "PENDING" and order_row.updated_at != later
    assert record.updated_at == later
    assert await timeline(database, order_id) == [("PENDING", "order placed")]
    assert await outbox_actions(database, order_id) == ["reserve_inventory"]


async def test_a_rolled_back_session_takes_the_saga_statements_with_it(
        database: Database) -> None:
    order_id = await placed_order(database)
    with pytest.raises(RuntimeError):
        async with database.session() as session, session.begin():
            await reserve_step(await repository.connection_of(session), order_id,
                               events=[an_event(order_id, "charge_payment")])
            raise RuntimeError("the participant's answer could not be applied")
    order_row, _ = await stored(database, order_id)
    assert order_row.status == "PENDING"
    assert await timeline(database, order_id) == [("PENDING", "order placed")]
    assert await outbox_actions(database, order_id) == ["reserve_inventory"]


async def test_an_own_transaction_that_raises_rolls_back_and_returns_its_connection_clean(
        database: Database) -> None:
    order_id = await placed_order(database)
    with pytest.raises(RuntimeError):
        async with repository.transaction(database.engine) as conn:
            await reserve_step(conn, order_id, moved=False,
                               events=[an_event(order_id, "charge_payment")])
            raise RuntimeError("the participant could not be reached")
    assert await outbox_actions(database, order_id) == ["reserve_inventory"]
    async with database.engine.connect() as connection:  # from the same pool
        assert not (await repository.driver_of(connection)).is_in_transaction()
