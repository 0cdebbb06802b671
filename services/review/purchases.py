"""Verified purchases: which products a user has bought, learnt from the order service.

An order's ``order.status_changed`` event (topic ``order.events``) says who owns it, where it
stands and, in ``lines``, which products it holds (each line's ``product_id``, or only its
``variant_id``, which the product service's ``GET /variants/{id}`` maps to its product).
Reaching a paid state records one purchase per (order, product); ``CANCELLED`` (the saga
refunded the charge) withdraws the order's purchases for good, so a late or redelivered paid
event cannot bring them back. A review is a verified purchase while its author has an active
purchase of its product.

Either side may come first: a purchase marks the author's existing reviews, and a new review
looks its purchases up. Both take one transaction-scoped advisory lock per (user, product)
before reading, so a review written at the moment its purchase is recorded cannot miss it
(each waits for the other to commit and then sees it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.order import OrderStatusChanged
from services.core.http import ServiceClient, UpstreamUnavailable
from services.review import repository

#: Order statuses that mean the shopper has paid (the saga's states after the charge).
PURCHASED_STATUSES = frozenset({"PAID", "SHIPMENT_CREATED", "CONFIRMED", "DELIVERED"})
#: A cancelled order was refunded (or never charged): its products were not bought.
WITHDRAWN_STATUSES = frozenset({"CANCELLED"})


@dataclass(frozen=True)
class OrderUpdate:
    order_id: uuid.UUID
    owner: str
    status: str
    product_ids: tuple[uuid.UUID, ...]
    #: Lines that name only a variant (as order lines do): resolved through the catalog.
    variant_ids: tuple[uuid.UUID, ...] = ()

    @property
    def relevant(self) -> bool:
        return self.status in PURCHASED_STATUSES or self.status in WITHDRAWN_STATUSES


def order_update(payload: dict[str, Any], *, schema_version: int = 1) -> OrderUpdate:
    """The parts of an ``order.status_changed`` payload this service uses; a payload that
    is not one raises :class:`~kommerce.contracts.events.base.InvalidPayload`
    (dead-lettered, never retried)."""
    change = OrderStatusChanged.parse(payload, schema_version=schema_version)
    products = {line.product_id for line in change.lines if line.product_id is not None}
    variants = {line.variant_id for line in change.lines
                if line.product_id is None and line.variant_id is not None}
    return OrderUpdate(change.order_id, change.owner, change.status, tuple(sorted(products)),
                       tuple(sorted(variants)))


async def products_of_variants(product: ServiceClient, variant_ids: Iterable[uuid.UUID]
                               ) -> set[uuid.UUID]:
    """The products the variants belong to, from the product service's ``GET /variants/{id}``
    (concurrently). A variant the catalog no longer has is left out; an unreachable or
    failing product service raises, and the event is retried (transient)."""

    async def product_of(variant_id: uuid.UUID) -> uuid.UUID | None:
        response = await product.get(f"/variants/{variant_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise UpstreamUnavailable(
                f"the product service answered {response.status_code} for variant "
                f"{variant_id}", details={"target": product.target,
                                          "status": response.status_code})
        return uuid.UUID(str(response.json()["product_id"]))

    found = await asyncio.gather(*(product_of(v) for v in variant_ids))
    return {p for p in found if p is not None}


async def apply_order_update(session: AsyncSession, change: OrderUpdate,
                             event_id: uuid.UUID) -> int:
    """Record or withdraw the order's purchases and re-derive the flag on the owner's
    reviews of those products; how many reviews changed."""
    if not change.product_ids:
        return 0
    purchased = change.status in PURCHASED_STATUSES
    if not purchased and change.status not in WITHDRAWN_STATUSES:
        return 0
    await repository.lock_pairs(session, change.owner, change.product_ids)
    # The first record of a purchase stands: a cancelled order's purchases stay withdrawn.
    await repository.record_purchases(session, change.order_id, change.owner,
                                      change.product_ids, active=purchased,
                                      event_id=event_id)
    return await repository.rederive_verified(session, change.owner, change.product_ids)
