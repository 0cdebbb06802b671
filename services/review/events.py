"""What the review service publishes and consumes (the contracts in
:mod:`kommerce.contracts.events.review` and :mod:`kommerce.contracts.events.order`).

Published (topic ``review.events``, keyed by product id, so a product's events stay in
order), built here and written to the outbox by :mod:`.service` in the transaction of the
change: ``review.created``, ``review.approved`` and ``rating.changed`` (the product's new
summary: ``product_id``, ``count``, ``average``, ``distribution``), which the search service
ranks by.

Consumed (topic ``order.events``): ``order.status_changed`` — paid and cancelled orders,
which make reviews verified purchases or take the flag back (:mod:`.purchases`). Other order
events are skipped; a payload that is not an order status change is dead-lettered.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.order import ORDER_STATUS_CHANGED
from kommerce.contracts.events.review import (
    RATING_CHANGED,
    REVIEW_APPROVED,
    REVIEW_CREATED,
    RatingChanged,
    ReviewEvent,
)
from services.core.events.consumer import EventHandlers
from services.core.events.envelope import EventEnvelope
from services.core.http import ServiceClient
from services.core.metrics import counter
from services.review.models import Review
from services.review.purchases import apply_order_update, order_update, products_of_variants

log = logging.getLogger(__name__)

VERIFIED_CHANGES = counter("review_verified_changes_total",
                           "Reviews whose verified-purchase flag an order event changed")


# -- published --------------------------------------------------------------------------------


def _review_event(event_type: str, review: Review, *, source: str) -> EventEnvelope:
    return EventEnvelope.new(
        event_type, source=source, key=str(review.product_id),
        payload=ReviewEvent(review_id=review.id, product_id=review.product_id,
                            user_id=review.user_id, rating=review.rating,
                            status=review.status).wire())


def review_created(review: Review, *, source: str) -> EventEnvelope:
    return _review_event(REVIEW_CREATED, review, source=source)


def review_approved(review: Review, *, source: str) -> EventEnvelope:
    return _review_event(REVIEW_APPROVED, review, source=source)


def rating_changed(product_id: uuid.UUID, summary: Mapping[str, Any], *,
                   source: str) -> EventEnvelope:
    """``summary`` is the product's rating summary as the service caches it; the contract
    checks it is a rating before it is published."""
    return EventEnvelope.new(RATING_CHANGED, source=source, key=str(product_id),
                             payload=RatingChanged.model_validate(summary).wire())


# -- consumed ---------------------------------------------------------------------------------


def order_handlers(catalog: Callable[[], ServiceClient | None]) -> EventHandlers:
    """``catalog`` gives the product service's client once the service runs (None when no
    product service is configured: lines naming only a variant are then skipped)."""
    handlers = EventHandlers()

    @handlers.on(ORDER_STATUS_CHANGED)
    async def record_purchase(session: AsyncSession, event: EventEnvelope) -> None:
        change = order_update(event.payload, schema_version=event.schema_version)
        if not change.relevant:
            return
        product = catalog()
        if change.variant_ids and product is not None:
            resolved = await products_of_variants(product, change.variant_ids)
            change = dataclasses.replace(change, product_ids=tuple(
                sorted(resolved | set(change.product_ids))))
        elif change.variant_ids:
            log.warning("order %s names variants but no product service is configured "
                        "(KOMMERCE_PRODUCT_SERVICE_URL); they are not verified",
                        change.order_id)
        if not change.product_ids:
            log.debug("order %s (%s) names no products; nothing to verify", change.order_id,
                      change.status)
            return
        VERIFIED_CHANGES.inc(await apply_order_update(session, change, event.id))

    return handlers
