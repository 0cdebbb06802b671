"""Request and response bodies of the product API.

Money is always an integer amount of the currency's minor unit (cents) plus an ISO 4217
code: floats cannot hold 0.10 exactly, and a price without its currency means nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.product.models import SKU_MAX, SLUG_MAX

SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAX_AMOUNT = 10**12  # a trillion minor units: far above any price, far below BIGINT
MAX_STOCK = 2**31 - 1

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=SLUG_MAX)]
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length=1,
                                       max_length=SKU_MAX)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
AttributeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
AttributeValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
ImageUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here with a clear message.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _attributes_ok(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 50:
        raise ValueError("at most 50 attributes")
    for item in value.values():
        _no_nul(item)
    return value


Attributes = Annotated[dict[AttributeName, AttributeValue], AfterValidator(_attributes_ok)]
CleanName = Annotated[Name, AfterValidator(_no_nul)]
CleanText = Annotated[Text, AfterValidator(_no_nul)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Money(BaseModel):
    amount: int = Field(ge=0, le=MAX_AMOUNT, description="Amount in the currency's minor "
                        "unit (e.g. cents).", examples=[1999])
    currency: Currency = Field(description="ISO 4217 code.", examples=["EUR"])


# -- categories ------------------------------------------------------------------------------


class CategoryIn(_In):
    slug: Slug = Field(description="Stable identifier, also the shard map's key.")
    name: CleanName
    description: CleanText = ""
    parent: Slug | None = Field(None, description="Slug of the parent category.")


class CategoryPatch(_In):
    name: CleanName | None = None
    description: CleanText | None = None
    parent: Slug | None = None


class CategoryOut(BaseModel):
    slug: str
    name: str
    description: str
    parent: str | None
    shard: str = Field(description="Shard that holds this category's products now.")
    created_at: datetime
    updated_at: datetime


# -- products and variants -------------------------------------------------------------------


class VariantIn(_In):
    sku: Sku = Field(description="Unique across the whole catalog.")
    name: CleanName | None = None
    attributes: Attributes = Field(default_factory=dict, description="e.g. {'size': 'M'}.")
    price: Money
    stock: int = Field(0, ge=0, le=MAX_STOCK, description="Units on hand.")


class VariantPatch(_In):
    """Name and attributes; the SKU never changes (retire the variant and add another), and
    price and stock have endpoints of their own, with their own events."""

    name: CleanName | None = None
    attributes: Attributes | None = None


class ProductIn(_In):
    category: Slug
    name: CleanName
    description: CleanText = ""
    attributes: Attributes = Field(default_factory=dict)
    images: list[ImageUrl] = Field(default_factory=list, max_length=20)
    variants: list[VariantIn] = Field(min_length=1, max_length=100,
                                      description="At least one: the thing that is sold.")

    @field_validator("variants")
    @classmethod
    def _distinct_skus(cls, variants: list[VariantIn]) -> list[VariantIn]:
        skus = [v.sku for v in variants]
        if len(set(skus)) != len(skus):
            raise ValueError("each variant needs its own SKU")
        return variants


class ProductPatch(_In):
    category: Slug | None = Field(None, description="Moving a product to a category on "
                                  "another shard moves its rows there.")
    name: CleanName | None = None
    description: CleanText | None = None
    attributes: Attributes | None = None
    images: list[ImageUrl] | None = Field(None, max_length=20)


class Stock(BaseModel):
    on_hand: int = Field(description="Units in the warehouse.")
    reserved: int = Field(description="Units held by active reservations.")
    available: int = Field(description="on_hand - reserved: what can still be reserved.")


class VariantOut(BaseModel):
    id: uuid.UUID
    sku: str
    name: str
    attributes: dict[str, str]
    price: Money
    stock: Stock


class ProductOut(BaseModel):
    id: uuid.UUID
    category: str
    name: str
    description: str
    attributes: dict[str, str]
    images: list[str]
    variants: list[VariantOut]
    version: int = Field(description="Bumped by every change to the product or its variants.")
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    items: list[ProductOut]
    next_cursor: str | None = Field(
        description="Pass as 'cursor' for the next page; null on the last page.")


class ProductSort(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    NAME = "name"
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"


class PriceIn(_In):
    amount: int = Field(ge=0, le=MAX_AMOUNT, description="Minor units.")
    currency: Currency


class StockUpdate(_In):
    """Either set the count on hand (a stock take) or adjust it (a delivery, a write-off)."""

    on_hand: int | None = Field(None, ge=0, le=MAX_STOCK)
    delta: int | None = Field(None, ge=-MAX_STOCK, le=MAX_STOCK)
    reason: CleanText | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> StockUpdate:
        if (self.on_hand is None) == (self.delta is None):
            raise ValueError("give exactly one of 'on_hand' and 'delta'")
        return self


# -- reservations ----------------------------------------------------------------------------


class ReservationLineIn(_In):
    variant_id: uuid.UUID
    quantity: int = Field(ge=1, le=10_000)


class ReservationIn(_In):
    id: uuid.UUID = Field(description="Chosen by the caller (e.g. the checkout's id): "
                          "repeating a request with the same id returns the same reservation.")
    lines: list[ReservationLineIn] = Field(min_length=1, max_length=100)
    ttl_seconds: int | None = Field(None, ge=1, description="How long to hold the stock; "
                                    "the service's default when absent, at most its "
                                    "reservation_max_ttl_seconds (else 422 ttl_too_long).")

    @field_validator("lines")
    @classmethod
    def _one_line_per_variant(cls, lines: list[ReservationLineIn]) -> list[ReservationLineIn]:
        ids = [line.variant_id for line in lines]
        if len(set(ids)) != len(ids):
            raise ValueError("name each variant once")
        return lines


ReservationStatus = Literal["active", "committed", "released", "expired"]


class ReservationLineOut(BaseModel):
    variant_id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    quantity: int


class ReservationOut(BaseModel):
    id: uuid.UUID
    status: ReservationStatus = Field(description="active: stock held; committed: sold; "
                                      "released/expired: stock returned.")
    owner: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    lines: list[ReservationLineOut]


class VariantLookupOut(VariantOut):
    """A variant found by its id alone, with the product it belongs to: what a cart or a
    checkout, which know only variant ids, needs to price a line."""

    product_id: uuid.UUID
    product_name: str
    category: str
