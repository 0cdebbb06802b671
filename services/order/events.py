"""What the order service publishes (the builders below) and consumes (the handlers after
them); the names and payloads are the contracts in :mod:`kommerce.contracts.events`.

Published (topic ``order.events``, keyed by order id; :mod:`kommerce.contracts.events.order`),
built here and written to the outbox by :mod:`.orchestrator` (the saga's steps, in the
statement that saves the step) and by the shipping handler below:

* ``order.saga_command`` — the next step of a checkout saga; consumed by this service
  itself, so a command survives a crash between deciding and doing;
* ``order.status_changed`` — every status change with the reason (for notifications and
  the shop front) and what the order holds (for the review service's verified purchases).

Consumed:

* ``payment.events``: ``payment.succeeded`` / ``payment.failed`` — the outcome of a charge
  that needed the shopper (3-D Secure) and was settled later (the shopper completing the
  challenge, or Stripe's webhook). Applied only when the event's payment id, intent id,
  amount, currency and order are the saga's own charge; any other payment, and a payload
  that is no payment event, is refused, kept in ``payment_event_rejections``, logged and
  counted (``payment_events_rejected_total{reason}``). The saga also hears most outcomes as
  the direct reply to its command; hearing one twice is harmless, because the saga ignores
  a reply for a step it has passed.
* ``shipping.events``: ``shipment.delivered`` — a confirmed order becomes DELIVERED (a
  tracking status after the saga, in the timeline too).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.order import (
    ORDER_STATUS_CHANGED,
    SAGA_COMMAND,
    OrderLine,
    OrderStatusChanged,
    SagaCommand,
)
from kommerce.contracts.events.payment import PAYMENT_FAILED, PAYMENT_SUCCEEDED
from kommerce.contracts.events.shipping import SHIPMENT_DELIVERED, ShipmentEvent
from services.core.events.consumer import EventHandlers
from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event
from services.order import repository
from services.order.metrics import ORDERS_TOTAL
from services.order.models import Order
from services.order.repository import SagaOrder
from services.order.saga import Command, SagaState

if TYPE_CHECKING:  # the orchestrator publishes with the builders below
    from services.order.orchestrator import Orchestrator

DELIVERED = "DELIVERED"


# -- published --------------------------------------------------------------------------------


def saga_command(order_id: uuid.UUID, command: Command, *, source: str) -> EventEnvelope:
    """``order.saga_command``: the saga's next step for the order (``attempt`` counts the
    resends)."""
    return EventEnvelope.new(SAGA_COMMAND, source=source, key=str(order_id),
                             payload=SagaCommand(order_id=order_id,
                                                 action=command.action.value,
                                                 attempt=command.attempt).wire())


def status_event_lines(order: Order | SagaOrder) -> list[OrderLine]:
    """What was bought, as ``order.status_changed`` carries it: consumers such as the review
    service (verified purchases) need the products, and reading them back from this
    service would couple them to its API. Named fields rather than the stored JSON as is,
    so the event's schema (:mod:`kommerce.contracts.events.order`) does not drift with the
    table (prices stay out: the event has no currency to read them in)."""
    return [OrderLine(variant_id=uuid.UUID(str(line["variant_id"])),
                      quantity=int(line["quantity"]))
            for line in order.lines]


def order_status_changed(order: Order | SagaOrder, *, source: str, status: str,
                         previous: str, reason: str | None) -> EventEnvelope:
    """``order.status_changed``: every status an order reaches, the saga's and DELIVERED
    alike, with why and what the order holds."""
    return EventEnvelope.new(
        ORDER_STATUS_CHANGED, source=source, key=str(order.id), payload=OrderStatusChanged(
            order_id=order.id, owner=order.owner, status=status, previous=previous,
            reason=reason, lines=status_event_lines(order)).wire())


# -- consumed ---------------------------------------------------------------------------------


def _order_id(shipment: ShipmentEvent) -> uuid.UUID | None:
    try:
        return uuid.UUID(shipment.order_id)
    except ValueError:
        return None  # not one of ours (e.g. a shipment made outside checkout)


def _settled_by(orchestrator: Callable[[], Orchestrator]) -> EventHandlers:
    """Handlers that first ask the orchestrator whether this process already applied the
    event (a command run inline, a charge's success heard as the step's reply)."""
    return EventHandlers(settled=lambda event: orchestrator().settled(event))


def own_handlers(orchestrator: Callable[[], Orchestrator]) -> EventHandlers:
    handlers = _settled_by(orchestrator)

    @handlers.on(SAGA_COMMAND)
    async def run_saga_command(session: AsyncSession, event: EventEnvelope) -> None:
        await orchestrator().run_command(session, event)

    return handlers


def payment_handlers(orchestrator: Callable[[], Orchestrator]) -> EventHandlers:
    """Payment news moves a saga only when it is about the saga's own charge; the
    orchestrator records and alarms anything else (see ``Orchestrator.settle_payment``)."""
    handlers = _settled_by(orchestrator)

    @handlers.on(PAYMENT_SUCCEEDED)
    async def payment_succeeded(session: AsyncSession, event: EventEnvelope) -> None:
        await orchestrator().settle_payment(session, event, succeeded=True)

    @handlers.on(PAYMENT_FAILED)
    async def payment_failed(session: AsyncSession, event: EventEnvelope) -> None:
        await orchestrator().settle_payment(session, event, succeeded=False)

    return handlers


def shipping_handlers(source: str) -> EventHandlers:
    """``source`` is the order service's name, the source of the status event it publishes."""
    handlers = EventHandlers()

    @handlers.on(SHIPMENT_DELIVERED)
    async def shipment_delivered(session: AsyncSession, event: EventEnvelope) -> None:
        shipment = ShipmentEvent.parse(event.payload, schema_version=event.schema_version)
        order_id = _order_id(shipment)
        if order_id is None:
            return
        order = await repository.lock_order(session, order_id)
        if order is None or order.status != SagaState.CONFIRMED.value:
            return
        previous = order.status
        repository.move_order(session, order, DELIVERED, shipment.description)
        ORDERS_TOTAL.labels(status=DELIVERED).inc()
        await add_event(session, order_status_changed(order, source=source, status=DELIVERED,
                                                      previous=previous, reason=None))

    return handlers
