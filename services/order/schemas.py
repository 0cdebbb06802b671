"""Request and response models. Amounts are integers in the currency's minor unit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.core.pci import REFUSE_CARD_NUMBERS, FreeText, NoCardNumber, PaymentMethodId


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckoutLineIn(_In):
    variant_id: uuid.UUID
    quantity: int = Field(ge=1, le=10_000)


class AddressIn(_In):
    """Where the parcel goes; it is stored with the order and handed to shipping, so a card
    number in it is refused (``card_number_in_text``) for the shopper to correct."""

    name: NoCardNumber = Field(min_length=1, max_length=200)
    line1: NoCardNumber = Field(min_length=1, max_length=200)
    line2: Annotated[str, Field(max_length=200), REFUSE_CARD_NUMBERS] | None = None
    city: NoCardNumber = Field(min_length=1, max_length=100)
    postal_code: NoCardNumber = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class CheckoutIn(_In):
    lines: list[CheckoutLineIn] = Field(min_length=1, max_length=100)
    currency: str = Field(pattern=r"^[a-z]{3}$")
    payment_method: PaymentMethodId
    shipping_address: AddressIn

    @field_validator("lines")
    @classmethod
    def _one_line_per_variant(cls, lines: list[CheckoutLineIn]) -> list[CheckoutLineIn]:
        ids = [line.variant_id for line in lines]
        if len(set(ids)) != len(ids):
            raise ValueError("name each variant once")
        return lines


class CartItemIn(_In):
    variant_id: uuid.UUID
    quantity: int = Field(ge=1, le=10_000)
    currency: str = Field(pattern=r"^[a-z]{3}$")


class CartQuantityIn(_In):
    quantity: int = Field(ge=0, le=10_000, description="Zero removes the line.")


class CartLineOut(BaseModel):
    variant_id: uuid.UUID
    quantity: int
    unit_price: int = Field(description="The price when added; re-checked at checkout.")


class CartOut(BaseModel):
    currency: str | None
    lines: list[CartLineOut]
    total: int


class CartCheckoutIn(_In):
    payment_method: PaymentMethodId
    shipping_address: AddressIn


class CancelIn(_In):
    #: Free text kept in the order's timeline: a card number in it is masked, not refused
    #: (the shopper wants the order cancelled, not a lesson).
    reason: FreeText = Field("cancelled by the shopper", min_length=1, max_length=500)


class StatusChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str
    note: str | None
    created_at: datetime


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner: str
    status: str
    reason: str | None
    currency: str
    total: int
    lines: list[dict[str, object]]
    shipping_address: dict[str, object]
    created_at: datetime
    updated_at: datetime


class OrderDetailOut(OrderOut):
    timeline: list[StatusChangeOut]
