"""What the payment service publishes; it consumes nothing. The names, topic and payload are
the contract in :mod:`kommerce.contracts.events.payment` (topic ``payment.events``, keyed by
order id so an order's payment events stay in order; ids, amounts, brand and last four
digits, never card data). Built here and written to the outbox by :mod:`.service` in the
transaction of the change, so the order saga hears of a payment only once it is recorded.
"""

from __future__ import annotations

from kommerce.contracts.events.payment import EVENT_FOR_STATUS, PaymentEvent
from services.core.events.envelope import EventEnvelope
from services.payment.models import Payment


def payment_event(payment: Payment, event_type: str, *, source: str) -> EventEnvelope:
    """``event_type`` with the payment as it now stands."""
    return EventEnvelope.new(
        event_type, source=source, key=payment.order_id,
        payload=PaymentEvent(
            payment_id=str(payment.id), order_id=payment.order_id,
            intent_id=payment.intent_id, owner=payment.owner, status=payment.status,
            amount=payment.amount, currency=payment.currency,
            refunded_amount=payment.refunded_amount, decline_code=payment.decline_code,
            failure_message=payment.failure_message, needs_review=payment.needs_review,
            card_brand=payment.card_brand, card_last4=payment.card_last4).wire())


def status_event(payment: Payment, *, source: str) -> EventEnvelope | None:
    """The event announcing the payment's new status, or None for a status no event
    announces (a payment still pending or processing)."""
    event_type = EVENT_FOR_STATUS.get(payment.status)
    if event_type is None:
        return None
    return payment_event(payment, event_type, source=source)
