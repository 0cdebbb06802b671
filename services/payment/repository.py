"""SQL for payments, refunds, customers and saved methods, the audit log and webhook
bookkeeping: module functions on the caller's session, which owns the transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment.models import (
    AuditEntry,
    Customer,
    Payment,
    Refund,
    SavedPaymentMethod,
    WebhookEvent,
)


async def payment_by_key(session: AsyncSession, key: str, *,
                         for_update: bool = False) -> Payment | None:
    query = select(Payment).where(Payment.idempotency_key == key)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def payment_by_id(session: AsyncSession, payment_id: uuid.UUID, *,
                        for_update: bool = False) -> Payment | None:
    query = select(Payment).where(Payment.id == payment_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def payments_for_order(session: AsyncSession, order_id: str) -> list[Payment]:
    query = select(Payment).where(Payment.order_id == order_id).order_by(Payment.created_at)
    return list((await session.execute(query)).scalars())


async def payment_by_intent(session: AsyncSession, intent_id: str) -> Payment | None:
    query = select(Payment).where(Payment.intent_id == intent_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


#: Payments that are, or may still become, money taken for their order.
_LIVE = ("pending", "requires_action", "processing", "succeeded", "partially_refunded",
         "refunded")


async def lock_order(session: AsyncSession, order_id: str) -> None:
    """Serialise charges for one order until the transaction ends (a transaction-scoped
    advisory lock on the order id), so two first charges under different keys cannot both
    see the order unpaid."""
    await session.execute(select(func.pg_advisory_xact_lock(
        func.hashtextextended(order_id, 0))))


async def live_payment_for_order(session: AsyncSession, order_id: str, *,
                                 other_than_key: str) -> Payment | None:
    """A payment for the order, under another key, that is not declined or canceled."""
    query = (select(Payment).where(Payment.order_id == order_id,
                                   Payment.idempotency_key != other_than_key,
                                   Payment.status.in_(_LIVE)).limit(1))
    return (await session.execute(query)).scalar_one_or_none()


async def claim_payment(session: AsyncSession,
                        values: dict[str, Any]) -> tuple[Payment, bool]:
    """The payment under ``values["idempotency_key"]``, inserted as pending unless the key
    exists; and whether this call inserted it."""
    inserted = await session.scalar(
        insert(Payment).values(id=uuid.uuid4(), status="pending", needs_review=False,
                               refunded_amount=0, **values)
        .on_conflict_do_nothing(index_elements=[Payment.idempotency_key])
        .returning(Payment))
    if inserted is not None:
        return inserted, True
    existing = await payment_by_key(session, values["idempotency_key"])
    assert existing is not None  # the conflict waited for the other insert to commit
    return existing, False


async def touch(session: AsyncSession, payment: Payment) -> None:
    """Write the payment's changes, stamped with the database's clock, in one UPDATE (the
    mapper's ``eager_defaults`` then reads the stamp back)."""
    payment.updated_at = func.now()
    await session.flush()


def add_refund(session: AsyncSession, refund: Refund) -> None:
    session.add(refund)


async def reload(session: AsyncSession, row: Refund) -> None:
    """Write ``row`` and read back what the database filled in (ids, timestamps)."""
    await session.flush()
    await session.refresh(row)


async def refund_by_key(session: AsyncSession, key: str) -> Refund | None:
    return (await session.execute(
        select(Refund).where(Refund.idempotency_key == key))).scalar_one_or_none()


async def audit(session: AsyncSession, payment_id: uuid.UUID | None, action: str, actor: str,
                details: dict[str, Any]) -> None:
    session.add(AuditEntry(payment_id=payment_id, action=action, actor=actor,
                           details=details))


async def audit_trail(session: AsyncSession, payment_id: uuid.UUID) -> list[AuditEntry]:
    query = (select(AuditEntry).where(AuditEntry.payment_id == payment_id)
             .order_by(AuditEntry.id))
    return list((await session.execute(query)).scalars())


async def first_delivery(session: AsyncSession, event_id: str, event_type: str) -> bool:
    """Record a webhook event id; False when it was applied before."""
    inserted = await session.execute(
        insert(WebhookEvent).values(event_id=event_id, event_type=event_type)
        .on_conflict_do_nothing().returning(WebhookEvent.event_id))
    return inserted.first() is not None


# -- customers and saved payment methods ---------------------------------------------------


async def customer(session: AsyncSession, owner: str) -> Customer | None:
    return await session.get(Customer, owner)


async def claim_customer(session: AsyncSession, owner: str,
                         provider_customer_id: str) -> Customer:
    """The shopper's customer, inserted with ``provider_customer_id`` unless one exists (a
    concurrent first save made it)."""
    await session.execute(
        insert(Customer).values(owner=owner, provider_customer_id=provider_customer_id)
        .on_conflict_do_nothing())
    found = await session.get(Customer, owner)
    assert found is not None
    return found


async def customer_of_saved(session: AsyncSession, owner: str,
                            payment_method: str) -> str | None:
    """The provider's customer id a saved card of ``owner``'s is charged on (Stripe requires
    it); None for a one-off method."""
    saved = await session.get(SavedPaymentMethod, payment_method)
    if saved is None or saved.owner != owner:
        return None
    found = await session.get(Customer, owner)
    return found.provider_customer_id if found else None


async def saved_method(session: AsyncSession, payment_method: str) -> SavedPaymentMethod | None:
    return await session.get(SavedPaymentMethod, payment_method)


async def claim_saved_method(session: AsyncSession, payment_method: str, owner: str, *,
                             brand: str | None, last4: str | None) -> SavedPaymentMethod:
    """The saved method with this id, inserted for ``owner`` unless it exists; the caller
    checks whose it is."""
    await session.execute(
        insert(SavedPaymentMethod).values(id=payment_method, owner=owner, brand=brand,
                                          last4=last4)
        .on_conflict_do_nothing())
    saved = await session.get(SavedPaymentMethod, payment_method)
    assert saved is not None
    return saved


async def saved_methods(session: AsyncSession, owner: str) -> list[SavedPaymentMethod]:
    query = (select(SavedPaymentMethod).where(SavedPaymentMethod.owner == owner)
             .order_by(SavedPaymentMethod.created_at))
    return list((await session.execute(query)).scalars())


async def delete_saved_method(session: AsyncSession, payment_method: str) -> None:
    await session.execute(delete(SavedPaymentMethod)
                          .where(SavedPaymentMethod.id == payment_method))
