"""Request and response models. Weights in grams, lengths in millimetres, amounts in the
currency's minor unit."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.core.pci import MASK_CARD_NUMBERS, REFUSE_CARD_NUMBERS, NoCardNumber
from services.shipping.rates import ServiceLevel


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParcelIn(_In):
    weight_grams: int = Field(ge=1, le=1_000_000)
    length_mm: int = Field(ge=1, le=10_000)
    width_mm: int = Field(ge=1, le=10_000)
    height_mm: int = Field(ge=1, le=10_000)


class RatesIn(_In):
    destination_country: str = Field(pattern=r"^[A-Z]{2}$")
    destination_postal_code: str | None = Field(
        None, min_length=1, max_length=20, pattern=r"^[A-Za-z0-9 -]+$",
        description="Carriers' APIs price by it (USPS needs it); the table ignores it.")
    parcels: list[ParcelIn] = Field(min_length=1, max_length=50)
    currency: str = Field(pattern=r"^[a-z]{3}$")
    service_levels: list[ServiceLevel] = Field(default_factory=list)


class QuoteOut(BaseModel):
    carrier: str
    service_level: ServiceLevel
    amount: int
    currency: str
    transit_days_min: int
    transit_days_max: int
    billable_weight_grams: int


class AddressIn(_In):
    """The label's address, stored with the shipment: a card number in it is refused
    (``card_number_in_text``), never printed on a parcel."""

    name: NoCardNumber = Field(min_length=1, max_length=200)
    line1: NoCardNumber = Field(min_length=1, max_length=200)
    line2: Annotated[str, Field(max_length=200), REFUSE_CARD_NUMBERS] | None = None
    city: NoCardNumber = Field(min_length=1, max_length=100)
    postal_code: NoCardNumber = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class ShipmentIn(_In):
    id: uuid.UUID = Field(description="Chosen by the caller: a repeat returns the same one.")
    order_id: str = Field(min_length=1, max_length=100)
    owner: str = Field(min_length=1, max_length=100)
    address: AddressIn
    parcels: list[ParcelIn] = Field(min_length=1, max_length=50)
    service_level: ServiceLevel = ServiceLevel.STANDARD
    currency: str = Field(pattern=r"^[a-z]{3}$")


class TrackingStatus(StrEnum):
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    EXCEPTION = "exception"


class TrackingIn(_In):
    status: TrackingStatus
    occurred_at: AwareDatetime
    # A carrier's words, shown to the shopper: a card number in them is masked.
    description: Annotated[str, Field(max_length=500), MASK_CARD_NUMBERS] | None = None
    location: Annotated[str, Field(max_length=200), MASK_CARD_NUMBERS] | None = None


class TrackingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str
    description: str | None
    location: str | None
    occurred_at: datetime


class ShipmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: str
    owner: str
    status: str = Field(description="created, picked_up, in_transit, out_for_delivery, "
                        "delivered, exception or cancelled.")
    carrier: str
    service_level: str
    tracking_number: str
    amount: int
    currency: str
    label: dict[str, object]
    created_at: datetime
    updated_at: datetime


class ShipmentDetailOut(ShipmentOut):
    tracking: list[TrackingOut]
