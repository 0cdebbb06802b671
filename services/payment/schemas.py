"""Request and response models. Amounts are integers in the currency's minor unit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.core.pci import MASK_CARD_NUMBERS, PaymentMethodId


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChargeIn(_In):
    """A charge for an order, asked by the order saga (the ``service`` role) and by it
    alone: the order's total in its currency, once per order."""

    order_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    amount: int = Field(ge=1, le=99_999_999)
    currency: str = Field(pattern=r"^[a-z]{3}$", description="ISO 4217, lower case.")
    payment_method: PaymentMethodId
    owner: str | None = Field(
        None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="The shopper charged for (their saved cards, their 3-D Secure); the "
        "caller when absent.")


class RefundIn(_In):
    amount: int | None = Field(None, ge=1, le=99_999_999,
                               description="Part to refund; the whole remainder when absent.")
    #: Free text an admin types: a pasted card number is masked, never stored.
    reason: Annotated[str, Field(max_length=500), MASK_CARD_NUMBERS] | None = None


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: str
    owner: str
    amount: int
    currency: str
    intent_id: str | None = Field(description="The provider's PaymentIntent id.")
    status: str = Field(description="pending, succeeded, requires_action, processing, "
                        "declined, canceled, partially_refunded or refunded.")
    card_brand: str | None
    card_last4: str | None
    decline_code: str | None
    failure_message: str | None
    risk_level: str | None
    needs_review: bool
    refunded_amount: int
    created_at: datetime
    updated_at: datetime
    client_secret: str | None = Field(
        None, description="Only with requires_action, to the charge's caller and to the "
        "payment's shopper: hand it to Stripe.js to authenticate.")


class RefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    payment_id: uuid.UUID
    amount: int
    status: str
    reason: str | None
    created_at: datetime


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    payment_id: uuid.UUID | None
    action: str
    actor: str
    details: dict[str, object]
    created_at: datetime


class SavePaymentMethodIn(_In):
    payment_method: PaymentMethodId


class SavedPaymentMethodOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    brand: str | None
    last4: str | None
    created_at: datetime
