"""What the payment service publishes (topic ``payment.events``, keyed by order id so an
order's payment events stay in order). Every event carries the payment as it now stands:

* ``payment.succeeded`` — the charge went through; ``needs_review`` when the provider's
  risk level reached the review threshold (the order service holds such orders).
* ``payment.failed`` — declined, with ``decline_code`` and a shopper-facing message.
* ``payment.action_required`` — the shopper must authenticate (3-D Secure).
* ``payment.refunded`` — a full or partial refund, with the total refunded so far.
* ``payment.canceled`` — an intent that never completed was canceled.

Ids, amounts, brand and last four digits only — never card data. The order saga applies
``payment.succeeded`` / ``payment.failed`` only when every identifying field is its own
charge's; the strict types here are the first half of that check (an amount of ``"16699"``
is no amount), the saga's comparison the second.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, StrictBool, StrictInt, StrictStr

from kommerce.contracts.events.base import EventPayload, topic_of

PAYMENT_TOPIC = topic_of("payment")
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


class PaymentEvent(EventPayload):
    """The payment as it stands after the change the event announces."""

    DESCRIBES: ClassVar[str] = "a payment event"

    payment_id: StrictStr = Field(min_length=1)
    order_id: StrictStr = Field(min_length=1)
    intent_id: StrictStr | None = None
    owner: StrictStr | None = None
    status: StrictStr
    amount: StrictInt = Field(ge=0, description="Minor units.")
    currency: StrictStr
    refunded_amount: StrictInt = Field(0, ge=0)
    decline_code: StrictStr | None = None
    failure_message: StrictStr | None = None
    needs_review: StrictBool = False
    card_brand: StrictStr | None = None
    card_last4: StrictStr | None = None
