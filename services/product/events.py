"""What the product service publishes (topic ``product.events``: the service's name, which
is each event's source); it consumes nothing yet: the checkout saga calls the reservation
API directly.

The names and payloads are the contract in :mod:`kommerce.contracts.events.product`; the
events are built here and written to the shard's outbox by :mod:`.service` and
:mod:`.inventory` in the transaction that made the change. Catalog events are keyed by
product id (``product.created``, ``product.updated``, ``product.deleted``,
``price.changed``, ``stock.changed``), holds by reservation id (``inventory.reserved``,
``inventory.committed``, ``inventory.released``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from kommerce.contracts.events.product import (
    INVENTORY_COMMITTED,
    INVENTORY_RELEASED,
    INVENTORY_RESERVED,
    PRICE_CHANGED,
    PRODUCT_CREATED,
    PRODUCT_DELETED,
    PRODUCT_UPDATED,
    STOCK_CHANGED,
    HeldLine,
    InventoryHold,
    Money,
    PriceChanged,
    ProductChanged,
    ProductDeleted,
    StockChanged,
)
from services.core.events.envelope import EventEnvelope
from services.product.models import Product, Reservation
from services.product.schemas import ProductOut


class Held(Protocol):
    """One line of a hold: a reservation's line, or one about to be written."""

    @property
    def variant_id(self) -> uuid.UUID: ...
    @property
    def product_id(self) -> uuid.UUID: ...
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...


# -- catalog ----------------------------------------------------------------------------------


def _product_changed(event_type: str, out: ProductOut, *, source: str) -> EventEnvelope:
    return EventEnvelope.new(event_type, source=source, key=str(out.id),
                             payload=ProductChanged.checked(out.model_dump(mode="json")))


def product_created(out: ProductOut, *, source: str) -> EventEnvelope:
    """The whole new product, as its API returns it."""
    return _product_changed(PRODUCT_CREATED, out, source=source)


def product_updated(out: ProductOut, *, source: str) -> EventEnvelope:
    """The whole product after the change, as its API returns it."""
    return _product_changed(PRODUCT_UPDATED, out, source=source)


def product_deleted(product: Product, *, source: str) -> EventEnvelope:
    """``product``, about to be deleted: the event carries its last version plus one."""
    return EventEnvelope.new(PRODUCT_DELETED, source=source, key=str(product.id),
                             payload=ProductDeleted(id=product.id, category=product.category,
                                                    version=product.version + 1).wire())


def price_changed(product_id: uuid.UUID, variant_id: uuid.UUID, sku: str,
                  old: Mapping[str, Any], new: Mapping[str, Any], *, changed_at: datetime,
                  source: str) -> EventEnvelope:
    """``old`` and ``new`` are the prices as ``{"amount": …, "currency": …}``."""
    return EventEnvelope.new(PRICE_CHANGED, source=source, key=str(product_id),
                             payload=PriceChanged(
                                 product_id=product_id, variant_id=variant_id, sku=sku,
                                 old=Money.model_validate(old), new=Money.model_validate(new),
                                 changed_at=changed_at.isoformat()).wire())


def stock_payload(row: Any) -> dict[str, Any]:
    """``stock.changed``'s payload from a variant's stock row: absolute counts, so a
    consumer that misses one is right again at the next."""
    return StockChanged(variant_id=row.id, product_id=row.product_id, sku=row.sku,
                        on_hand=row.on_hand, reserved=row.reserved,
                        available=row.on_hand - row.reserved).wire()


def stock_changed(row: Any, *, source: str, reason: str | None = None) -> EventEnvelope:
    """A variant's counts after any change (``row``: its stock row); a stock count or
    adjustment says why when it was told (``reason``, after the counts)."""
    payload = stock_payload(row)
    if reason:
        payload["reason"] = reason
    return EventEnvelope.new(STOCK_CHANGED, source=source, key=str(row.product_id),
                             payload=payload)


# -- holds ------------------------------------------------------------------------------------


def hold_payload(reservation_id: uuid.UUID, lines: Sequence[Held], *, owner: str | None,
                 expires_at: str, reason: str | None = None) -> dict[str, Any]:
    """``inventory.*``'s payload: the hold's lines on this shard (``expires_at`` in ISO
    8601)."""
    return InventoryHold(
        reservation_id=reservation_id,
        lines=[HeldLine(variant_id=line.variant_id, product_id=line.product_id, sku=line.sku,
                        quantity=line.quantity) for line in lines],
        owner=owner, expires_at=expires_at, reason=reason).wire()


def inventory_reserved(reservation_id: uuid.UUID, lines: Sequence[Held], *, owner: str,
                       expires_at: datetime, source: str) -> EventEnvelope:
    return EventEnvelope.new(INVENTORY_RESERVED, source=source, key=str(reservation_id),
                             payload=hold_payload(reservation_id, lines, owner=owner,
                                                  expires_at=expires_at.isoformat()))


def _settled(event_type: str, part: Reservation, *, source: str,
             reason: str | None = None) -> EventEnvelope:
    return EventEnvelope.new(event_type, source=source, key=str(part.id), payload=hold_payload(
        part.id, part.lines, owner=part.owner, expires_at=part.expires_at.isoformat(),
        reason=reason))


def inventory_committed(part: Reservation, *, source: str) -> EventEnvelope:
    """The part of a reservation on this shard, sold."""
    return _settled(INVENTORY_COMMITTED, part, source=source)


def inventory_released(part: Reservation, *, reason: str, source: str) -> EventEnvelope:
    """The part of a reservation on this shard, given back: ``reason`` is ``released``,
    ``expired`` or ``aborted``."""
    return _settled(INVENTORY_RELEASED, part, source=source, reason=reason)
