"""What the product service publishes (topic ``product.events``), through the shard's
outbox in the transaction that made the change. Catalog events are keyed by product id,
inventory holds by reservation id, so a partition keeps each aggregate's events in order;
catalog payloads carry the product's ``version`` so a consumer can drop a stale one.

* ``product.created`` / ``product.updated`` — the whole product (:class:`ProductChanged`,
  the product's JSON as its API returns it: what the search service indexes);
* ``product.deleted`` — id, category and last version;
* ``price.changed`` — one variant's old and new price;
* ``stock.changed`` — one variant's on-hand, reserved and available counts after any change;
* ``inventory.reserved`` / ``inventory.committed`` / ``inventory.released`` — a
  reservation's lines (the part of it on one shard); ``released`` says why (``released``,
  ``expired``, ``aborted``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from kommerce.contracts.events.base import EventPayload, topic_of

PRODUCT_TOPIC = topic_of("product")
PRODUCT_CREATED = "product.created"
PRODUCT_UPDATED = "product.updated"
PRODUCT_DELETED = "product.deleted"
PRICE_CHANGED = "price.changed"
STOCK_CHANGED = "stock.changed"
INVENTORY_RESERVED = "inventory.reserved"
INVENTORY_COMMITTED = "inventory.committed"
INVENTORY_RELEASED = "inventory.released"

PUBLISHED = (PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCT_DELETED, PRICE_CHANGED, STOCK_CHANGED,
             INVENTORY_RESERVED, INVENTORY_COMMITTED, INVENTORY_RELEASED)
#: The catalog's events: what a read model of the catalog (search) follows.
CATALOG_EVENTS = (PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCT_DELETED, PRICE_CHANGED,
                  STOCK_CHANGED)


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Money(_Part):
    amount: int = Field(ge=0, description="Minor units.")
    currency: str = Field(min_length=1)


class StockCounts(_Part):
    on_hand: int = 0
    reserved: int = 0
    available: int = 0


class Variant(_Part):
    id: uuid.UUID
    sku: str
    name: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    price: Money
    stock: StockCounts = Field(default_factory=StockCounts)

    @field_validator("attributes", "stock", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return {} if info.field_name == "attributes" else StockCounts()
        return value


class ProductChanged(EventPayload):
    """The whole product. The product service sends its API's JSON of the product as it
    is (:meth:`~kommerce.contracts.events.base.EventPayload.checked`); this is the part of
    it a consumer may rely on."""

    DESCRIBES: ClassVar[str] = "a product document"

    id: uuid.UUID
    category: str
    name: str
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)
    version: int
    created_at: datetime
    updated_at: datetime

    @field_validator("description", "attributes", "images", "variants", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            return value
        if info.field_name == "description":
            return ""
        return {} if info.field_name == "attributes" else []


class ProductDeleted(EventPayload):
    DESCRIBES: ClassVar[str] = "a product deletion"

    id: uuid.UUID
    category: str = ""
    version: int = Field(description="The deleted product's last version, plus one.")

    @field_validator("category", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


class PriceChanged(EventPayload):
    DESCRIBES: ClassVar[str] = "a price change"

    product_id: uuid.UUID
    variant_id: uuid.UUID
    sku: str | None = None
    old: Money | None = None
    new: Money
    changed_at: str | None = Field(None, description="ISO 8601, as the publisher wrote it.")


class StockChanged(EventPayload):
    """Absolute counts, so a consumer that misses one is right again at the next."""

    DESCRIBES: ClassVar[str] = "a stock change"

    variant_id: uuid.UUID
    product_id: uuid.UUID
    sku: str | None = None
    on_hand: int | None = None
    reserved: int | None = None
    available: int


class HeldLine(_Part):
    variant_id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    quantity: int = Field(ge=1)


class InventoryHold(EventPayload):
    """A reservation's lines on one shard, and why it was released (``released``,
    ``expired``, ``aborted``) when it was."""

    DESCRIBES: ClassVar[str] = "an inventory hold"

    reservation_id: uuid.UUID
    lines: list[HeldLine]
    owner: str | None = None
    expires_at: str = Field(description="ISO 8601, as the publisher wrote it.")
    reason: str | None = Field(None, exclude_if=lambda value: value is None)
