"""The order saga's refund, against the real payment service (sandbox gateway): it undoes
the saga's own charge and nothing else, even when another payment for the order sits in
the table (one made before payments belonged to the saga, e.g. a shopper's one cent)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from services.core.auth import TokenService
from services.order.participants import HttpParticipants
from services.order.repository import SagaOrder
from services.order.saga import (
    Command,
    Compensation,
    CompensationDone,
    PaymentActionRequired,
    Step,
    StepSucceeded,
)
from services.payment.models import Payment
from tests.services.payment.conftest import Service
from tests.services.support import unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def saga_participants(service: Service) -> HttpParticipants:
    """The order service's participants, calling this payment service as the saga does
    (product and shipping are not asked for a refund)."""
    return HttpParticipants(TokenService(service.settings), "order", product=service.client,
                            payment=service.client, shipping=service.client)


def an_order(method: str = "pm_card_visa") -> SagaOrder:
    return SagaOrder(id=uuid.uuid4(), owner=unique("shopper"), status="INVENTORY_RESERVED",
                     reason=None, currency="usd", total=2500, lines=[],
                     payment_method=method, shipping_address={})


async def a_payment_from_before(service: Service, order: SagaOrder) -> uuid.UUID:
    """A one-cent payment for ``order`` as a shopper could make one before this change:
    charged at the provider, and its row written as the old service wrote it."""
    charged = await service.app.state.payments.gateway.charge(
        amount=1, currency="usd", payment_method="pm_card_visa",
        idempotency_key=unique("legacy"))
    payment_id = uuid.uuid4()
    async with service.database.session() as session, session.begin():
        session.add(Payment(id=payment_id, idempotency_key=unique("shopper-key"),
                            order_id=str(order.id), owner="mallory", amount=1,
                            currency="usd", status="succeeded", intent_id=charged.intent_id,
                            needs_review=False, refunded_amount=0))
    return payment_id


async def amounts(service: Service, order: SagaOrder) -> dict[int, tuple[str, int]]:
    """The order's payments: amount -> (status, refunded)."""
    async with service.database.session() as session:
        rows = (await session.execute(select(Payment).where(
            Payment.order_id == str(order.id)))).scalars()
        return {p.amount: (p.status, p.refunded_amount) for p in rows}


async def test_the_refund_undoes_the_sagas_charge_and_nothing_else(service: Service) -> None:
    participants, order = saga_participants(service), an_order()
    charged = await participants.perform(order, Command(str(order.id), Step.CHARGE_PAYMENT))
    assert isinstance(charged, StepSucceeded) and charged.charge is not None
    assert (charged.charge.amount, charged.charge.currency) == (2500, "usd")
    await a_payment_from_before(service, order)
    refund = Command(str(order.id), Compensation.REFUND_PAYMENT, charge=charged.charge)
    assert await participants.perform(order, refund) == CompensationDone(
        Compensation.REFUND_PAYMENT)
    assert await participants.perform(order, refund) == CompensationDone(
        Compensation.REFUND_PAYMENT)  # a resent compensation refunds nothing twice
    assert await amounts(service, order) == {2500: ("refunded", 2500), 1: ("succeeded", 0)}


async def test_without_a_charge_on_record_only_the_orders_total_is_refunded(
        service: Service) -> None:
    """The charge's reply never arrived: the order's payments are looked up, and only the
    one of the order's total in its currency is taken for the saga's."""
    participants, order = saga_participants(service), an_order()
    await participants.perform(order, Command(str(order.id), Step.CHARGE_PAYMENT))
    await a_payment_from_before(service, order)
    refund = Command(str(order.id), Compensation.REFUND_PAYMENT)
    assert await participants.perform(order, refund) == CompensationDone(
        Compensation.REFUND_PAYMENT)
    assert await amounts(service, order) == {2500: ("refunded", 2500), 1: ("succeeded", 0)}


async def test_a_charge_waiting_for_3d_secure_is_recorded_with_its_intent(
        service: Service) -> None:
    participants, order = saga_participants(service), an_order("pm_card_threeDSecure2Required")
    waiting = await participants.perform(order, Command(str(order.id), Step.CHARGE_PAYMENT))
    assert isinstance(waiting, PaymentActionRequired) and waiting.charge is not None
    fetched = await service.client.get(f"/payments/{waiting.charge.payment_id}",
                                       headers=service.saga())
    assert (fetched.json()["intent_id"], fetched.json()["owner"]) == (
        waiting.charge.intent_id, order.owner)
    # Nothing to refund yet; the compensation is done without touching it.
    refund = Command(str(order.id), Compensation.REFUND_PAYMENT, charge=waiting.charge)
    assert await participants.perform(order, refund) == CompensationDone(
        Compensation.REFUND_PAYMENT)
    assert await amounts(service, order) == {2500: ("requires_action", 0)}
