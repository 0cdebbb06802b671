"""What the payment service publishes (topic ``payment.events``, keyed by order id so an
order's payment events stay in order).

* ``payment.succeeded`` — the charge went through; ``needs_review`` when Stripe's risk
  level reached the review threshold (the order service holds such orders for a person).
* ``payment.failed`` — declined, with ``decline_code`` and a shopper-facing message.
* ``payment.action_required`` — the shopper must authenticate (3-D Secure).
* ``payment.refunded`` — a full or partial refund, with the total refunded so far.
* ``payment.canceled`` — an intent that never completed was canceled.

Payloads carry ids, amounts, brand and last four digits — never card data.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event

PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
PAYMENT_ACTION_REQUIRED = "payment.action_required"
PAYMENT_REFUNDED = "payment.refunded"
PAYMENT_CANCELED = "payment.canceled"

#: The event announcing each payment status.
EVENT_FOR_STATUS = {
    "succeeded": PAYMENT_SUCCEEDED,
    "declined": PAYMENT_FAILED,
    "requires_action": PAYMENT_ACTION_REQUIRED,
    "canceled": PAYMENT_CANCELED,
    "partially_refunded": PAYMENT_REFUNDED,
    "refunded": PAYMENT_REFUNDED,
}


class Publisher:
    """Stamps events with the service's name; ``publish`` joins the session's transaction."""

    def __init__(self, source: str) -> None:
        self.source = source

    async def publish(self, session: AsyncSession, event_type: str, key: str,
                      payload: dict[str, Any]) -> None:
        await add_event(session, EventEnvelope.new(event_type, source=self.source, key=key,
                                                   payload=payload))
