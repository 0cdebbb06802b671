"""The saga's rows: locking a saga with its order, starting one, saving a step.

Every step of every checkout runs these, so each is one statement built once, here:

* the statements are module constants with bound parameters, so SQLAlchemy computes their
  cache keys once instead of walking a freshly built statement on every call;
* a step that moves the order writes the saga, the order's status and its timeline row in
  one statement (data-modifying CTEs) rather than through the ORM's flush, which spent
  about as much CPU as the rest of the step together and took three round trips;
* the ORM objects the caller holds are brought up to date with ``set_committed_value``, so
  nothing is flushed twice and they read as what was written.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services.order.models import Order, OrderStatusChange, SagaRecord
from services.order.saga import Saga

_sagas = SagaRecord.__table__
_orders = Order.__table__
_history = OrderStatusChange.__table__

_LOCK = (select(SagaRecord, Order).join(Order, Order.id == SagaRecord.order_id)
         .where(SagaRecord.order_id == bindparam("for_order"))
         .with_for_update(of=SagaRecord))



def _saga_values() -> dict[str, Any]:
    return {"state": bindparam("saga_state"), "deadline": bindparam("saga_deadline"),
            "settled": bindparam("saga_settled"), "updated_at": bindparam("now")}


# Each statement is built from its own parts (constants must not share bound parameters),
# and no parameter is named after a column of a table written: SQLAlchemy would take such
# a parameter for that column's new value.
def _save() -> Any:
    return _sagas.update().where(_sagas.c.order_id == bindparam("for_order")).values(
        _saga_values())


def _timeline_row() -> Any:
    return _history.insert().values(order_id=bindparam("for_order"),
                                    status=bindparam("order_status"), note=bindparam("status_note"))


_SAVE = _save()

_SAVE_AND_MOVE = _timeline_row().add_cte(
    _save().cte("saved_saga"),
    _orders.update().where(_orders.c.id == bindparam("for_order"))
    .values(status=bindparam("order_status"), reason=bindparam("status_note"),
            updated_at=bindparam("now")).cte("moved_order"))

_START = _timeline_row().add_cte(
    _sagas.insert().values(order_id=bindparam("for_order"), **_saga_values())
    .cte("started_saga"))


def _saga_params(order_id: uuid.UUID, saga: Saga, now: datetime) -> dict[str, Any]:
    return {"for_order": order_id, "saga_state": saga.to_dict(),
            "saga_deadline": None if saga.is_settled else saga.deadline,
            "saga_settled": saga.is_settled, "now": now}


async def lock(session: AsyncSession, order_id: uuid.UUID) -> tuple[SagaRecord, Order] | None:
    """The saga and its order in one round trip; only the saga row is locked, and every
    writer of the order takes that lock first."""
    found = (await session.execute(_LOCK, {"for_order": order_id})).first()
    if found is None:
        return None
    record, order = found
    return record, order


async def start(session: AsyncSession, order: Order, saga: Saga, now: datetime,
                note: str) -> None:
    """The saga row of a freshly inserted order and the order's first timeline row."""
    await session.execute(_START, {**_saga_params(order.id, saga, now),
                                   "order_status": order.status, "status_note": note})


async def save(session: AsyncSession, record: SagaRecord, order: Order, saga: Saga,
               now: datetime, *, moved: bool) -> None:
    """Store the saga; when ``moved``, also the order's new status (the saga's state, with
    its reason) and a timeline row for it."""
    params = _saga_params(order.id, saga, now)
    if moved:
        await session.execute(_SAVE_AND_MOVE, {**params, "order_status": saga.state.value,
                                               "status_note": saga.reason})
        set_committed_value(order, "status", saga.state.value)
        set_committed_value(order, "reason", saga.reason)
        set_committed_value(order, "updated_at", now)
    else:
        await session.execute(_SAVE, params)
    set_committed_value(record, "state", params["saga_state"])
    set_committed_value(record, "deadline", params["saga_deadline"])
    set_committed_value(record, "settled", params["saga_settled"])
    set_committed_value(record, "updated_at", now)
