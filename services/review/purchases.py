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

from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.events.consumer import PoisonEvent
from services.core.http import ServiceClient, UpstreamUnavailable
from services.review.models import Purchase, Review

#: Order statuses that mean the shopper has paid (the saga's states after the charge).
PURCHASED_STATUSES = frozenset({"PAID", "SHIPMENT_CREATED", "CONFIRMED", "DELIVERED"})
#: A cancelled order was refunded (or never charged): its products were not bought.
WITHDRAWN_STATUSES = frozenset({"CANCELLED"})
MAX_LINES = 500


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


def order_update(payload: dict[str, Any]) -> OrderUpdate:
    """The parts of an ``order.status_changed`` payload this service uses; a payload that
    is not one raises :class:`PoisonEvent` (dead-lettered, never retried)."""
    try:
        order_id = uuid.UUID(str(payload["order_id"]))
        owner = payload["owner"]
        status = payload["status"]
        lines = payload.get("lines") or []
        if not isinstance(owner, str) or not owner or len(owner) > 255:
            raise ValueError(f"owner {owner!r} is not a user id")
        if not isinstance(status, str):
            raise ValueError(f"status {status!r} is not a string")
        if not isinstance(lines, list) or len(lines) > MAX_LINES:
            raise ValueError(f"lines is not a list of at most {MAX_LINES}")
        products: set[uuid.UUID] = set()
        variants: set[uuid.UUID] = set()
        for line in lines:
            if not isinstance(line, dict):
                raise ValueError(f"line {line!r} is not an object")
            if line.get("product_id") is not None:
                products.add(uuid.UUID(str(line["product_id"])))
            elif line.get("variant_id") is not None:
                variants.add(uuid.UUID(str(line["variant_id"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonEvent(f"not an order status change: {exc!r}") from exc
    return OrderUpdate(order_id, owner, status, tuple(sorted(products)),
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


async def lock_pairs(session: AsyncSession, user_id: str,
                     product_ids: Iterable[uuid.UUID]) -> None:
    """Serialise purchase recording and review writing per (user, product); sorted, so two
    transactions locking several pairs cannot deadlock."""
    for product_id in sorted(set(product_ids)):
        await session.execute(select(func.pg_advisory_xact_lock(
            func.hashtextextended(f"review-purchase:{user_id}:{product_id}", 0))))


async def has_purchased(session: AsyncSession, user_id: str, product_id: uuid.UUID) -> bool:
    return bool((await session.execute(select(exists().where(
        Purchase.user_id == user_id, Purchase.product_id == product_id,
        Purchase.active.is_(True))))).scalar_one())


async def apply_order_update(session: AsyncSession, change: OrderUpdate,
                             event_id: uuid.UUID) -> int:
    """Record or withdraw the order's purchases and re-derive the flag on the owner's
    reviews of those products; how many reviews changed."""
    if not change.product_ids:
        return 0
    purchased = change.status in PURCHASED_STATUSES
    if not purchased and change.status not in WITHDRAWN_STATUSES:
        return 0
    await lock_pairs(session, change.owner, change.product_ids)
    rows = [{"order_id": change.order_id, "product_id": product_id, "user_id": change.owner,
             "active": purchased, "event_id": event_id} for product_id in change.product_ids]
    statement = insert(Purchase).values(rows)
    if purchased:
        # The first record stands: a cancelled order's purchases stay withdrawn.
        statement = statement.on_conflict_do_nothing(
            index_elements=[Purchase.order_id, Purchase.product_id])
    else:
        statement = statement.on_conflict_do_update(
            index_elements=[Purchase.order_id, Purchase.product_id],
            set_={"active": False, "event_id": event_id, "updated_at": func.now()})
    await session.execute(statement)
    verified = exists().where(Purchase.user_id == Review.user_id,
                              Purchase.product_id == Review.product_id,
                              Purchase.active.is_(True))
    result = await session.execute(
        update(Review)
        .where(Review.user_id == change.owner, Review.product_id.in_(change.product_ids),
               Review.verified_purchase.is_distinct_from(verified))
        .values(verified_purchase=verified)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
