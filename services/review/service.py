"""The review service's rules. No FastAPI here.

* One review per user and product (a unique constraint, so two concurrent posts cannot both
  win); only the author edits, the author or an admin deletes.
* Text passes the automatic screen on create and on every text edit; an edit of an approved
  review that trips the screen takes it off the page again.
* Helpful votes: one per user and review (a second vote replaces the first), never on one's
  own review, only on published reviews.
* A product's rating summary counts approved reviews only. It is cached; whatever changes
  the approved set drops the cache and publishes ``rating.changed`` with the new summary
  (in the same transaction, through the outbox), so product and search can show and rank
  by it.
* A review is a verified purchase while its author has a paid, uncancelled order of the
  product (:mod:`services.review.purchases`, fed by order events).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.auth import Principal
from services.core.cache import Cache
from services.core.db import Database
from services.core.errors import Conflict, Forbidden, NotFound
from services.core.events.outbox import add_event
from services.core.metrics import counter
from services.review import events, repository
from services.review.models import Review
from services.review.moderation import ReviewStatus, may_moderate, screen
from services.review.schemas import (
    ModerationIn,
    RatingSummary,
    ReviewIn,
    ReviewOut,
    ReviewPage,
    ReviewPatch,
    ReviewSort,
)
from services.review.settings import ReviewSettings

REVIEWS = counter("reviews_total", "Reviews written, by the screen's verdict", ["status"])


def review_out(review: Review) -> ReviewOut:
    return ReviewOut.model_validate(review, from_attributes=True)


def _page(rows: list[Review], total: int, page: int, size: int) -> ReviewPage:
    return ReviewPage(items=[review_out(r) for r in rows], total=total, page=page, size=size)


class ReviewService:
    def __init__(self, database: Database, cache: Cache, settings: ReviewSettings) -> None:
        self.database = database
        self.cache = cache
        self.settings = settings

    # -- writing ----------------------------------------------------------------------------

    async def create(self, product_id: uuid.UUID, author: Principal,
                     review_in: ReviewIn) -> ReviewOut:
        verdict = screen([review_in.title, review_in.body], self.settings.banned_words,
                         self.settings.auto_approve_clean_reviews)
        now = datetime.now(UTC)
        review = Review(
            id=uuid.uuid4(), product_id=product_id, user_id=author.user_id,
            rating=review_in.rating, title=review_in.title, body=review_in.body,
            status=verdict.status.value, flags=list(verdict.flags),
            moderation_reason=verdict.reason, verified_purchase=False,
            helpful_count=0, unhelpful_count=0, created_at=now, updated_at=now)
        try:
            async with self.database.session() as session, session.begin():
                # Locked against a purchase being recorded this instant (see purchases).
                await repository.lock_pairs(session, author.user_id, [product_id])
                review.verified_purchase = await repository.has_purchased(
                    session, author.user_id, product_id)
                await repository.add_review(session, review)
                await add_event(session, events.review_created(
                    review, source=self.settings.service_name))
                if verdict.status is ReviewStatus.APPROVED:
                    await self._approved_set_changed(session, review, approved_now=True)
        except IntegrityError as exc:
            raise Conflict("you have already reviewed this product; edit that review instead",
                           code="already_reviewed") from exc
        REVIEWS.labels(verdict.status.value).inc()
        await self._drop_summary(product_id, verdict.status is ReviewStatus.APPROVED)
        return review_out(review)

    async def edit(self, review_id: uuid.UUID, author: Principal,
                   patch: ReviewPatch) -> ReviewOut:
        async with self.database.session() as session, session.begin():
            review = await self._locked(session, review_id)
            if review.user_id != author.user_id:
                raise Forbidden("only the author can edit a review", code="not_the_author")
            was = ReviewStatus(review.status)
            old_rating = review.rating
            if patch.rating is not None:
                review.rating = patch.rating
            text_changed = False
            for field in ("title", "body"):
                value = getattr(patch, field)
                if value is not None and value != getattr(review, field):
                    setattr(review, field, value)
                    text_changed = True
            if text_changed:
                verdict = screen([review.title, review.body], self.settings.banned_words,
                                 self.settings.auto_approve_clean_reviews)
                # An approved review stays approved unless its new text trips the screen.
                if verdict.flags or was is not ReviewStatus.APPROVED:
                    review.status = verdict.status.value
                review.flags = list(verdict.flags)
                review.moderation_reason = verdict.reason
            review.updated_at = datetime.now(UTC)
            now = ReviewStatus(review.status)
            counted_before = was is ReviewStatus.APPROVED
            counted_after = now is ReviewStatus.APPROVED
            affects_rating = counted_before != counted_after or (
                counted_after and old_rating != review.rating)
            if counted_after and not counted_before:
                await add_event(session, events.review_approved(
                    review, source=self.settings.service_name))
            if affects_rating:
                await self._publish_rating(session, review.product_id)
        await self._drop_summary(review.product_id, affects_rating)
        return review_out(review)

    async def delete(self, review_id: uuid.UUID, caller: Principal) -> None:
        async with self.database.session() as session, session.begin():
            review = await self._locked(session, review_id)
            if review.user_id != caller.user_id and not caller.has_role("admin"):
                raise Forbidden("only the author or an admin can delete a review",
                                code="not_the_author")
            counted = review.status == ReviewStatus.APPROVED
            await repository.delete_review(session, review)
            if counted:
                await self._publish_rating(session, review.product_id)
        await self._drop_summary(review.product_id, counted)

    async def moderate(self, review_id: uuid.UUID, moderation: ModerationIn) -> ReviewOut:
        async with self.database.session() as session, session.begin():
            review = await self._locked(session, review_id)
            current = ReviewStatus(review.status)
            if not may_moderate(current, moderation.decision):
                raise Conflict(f"the review is {current.value}; it cannot become "
                               f"{moderation.decision.value}", code="invalid_transition")
            review.status = moderation.decision.value
            review.moderation_reason = moderation.reason
            review.updated_at = datetime.now(UTC)
            if moderation.decision is ReviewStatus.APPROVED:
                await add_event(session, events.review_approved(
                    review, source=self.settings.service_name))
            affects_rating = ReviewStatus.APPROVED in (current, moderation.decision)
            if affects_rating:
                await self._publish_rating(session, review.product_id)
        await self._drop_summary(review.product_id, affects_rating)
        return review_out(review)

    async def vote(self, review_id: uuid.UUID, voter: Principal, helpful: bool) -> ReviewOut:
        async with self.database.session() as session, session.begin():
            review = await self._locked(session, review_id)
            if review.status != ReviewStatus.APPROVED:
                raise NotFound(f"there is no published review {review_id}")
            if review.user_id == voter.user_id:
                raise Forbidden("you cannot vote on your own review", code="own_review")
            await repository.put_vote(session, review_id, voter.user_id, helpful)
            await repository.recount_votes(session, review)
        return review_out(review)

    async def withdraw_vote(self, review_id: uuid.UUID, voter: Principal) -> None:
        async with self.database.session() as session, session.begin():
            review = await self._locked(session, review_id)
            await repository.delete_vote(session, review_id, voter.user_id)
            await repository.recount_votes(session, review)

    # -- reading ----------------------------------------------------------------------------

    async def get(self, review_id: uuid.UUID, caller: Principal | None) -> ReviewOut:
        async with self.database.session() as session:
            review = await repository.review(session, review_id)
        visible = review is not None and (
            review.status == ReviewStatus.APPROVED
            or (caller is not None and (caller.user_id == review.user_id
                                        or caller.has_role("admin"))))
        if review is None or not visible:
            raise NotFound(f"there is no review {review_id}")
        return review_out(review)

    async def list_for_product(self, product_id: uuid.UUID, sort: ReviewSort, page: int,
                               size: int) -> ReviewPage:
        async with self.database.session() as session:
            rows, total = await repository.approved_page(session, product_id, sort,
                                                         offset=(page - 1) * size, limit=size)
        return _page(rows, total, page, size)

    async def queue(self, status: ReviewStatus, page: int, size: int) -> ReviewPage:
        """The moderation queue: oldest first, so nothing waits forever."""
        async with self.database.session() as session:
            rows, total = await repository.oldest_page(session, status.value,
                                                       offset=(page - 1) * size, limit=size)
        return _page(rows, total, page, size)

    async def summary(self, product_id: uuid.UUID) -> RatingSummary:
        data = await self.cache.get_or_load(
            str(product_id), lambda: self._load_summary(product_id),
            ttl=self.settings.rating_cache_ttl_seconds)
        return RatingSummary.model_validate(data)

    # -- helpers ----------------------------------------------------------------------------

    async def _locked(self, session: AsyncSession, review_id: uuid.UUID) -> Review:
        review = await repository.review(session, review_id, for_update=True)
        if review is None:
            raise NotFound(f"there is no review {review_id}")
        return review

    async def _load_summary(self, product_id: uuid.UUID,
                            session: AsyncSession | None = None) -> dict[str, Any]:
        if session is None:
            async with self.database.session() as own:
                rows = await repository.approved_ratings(own, product_id)
        else:
            rows = await repository.approved_ratings(session, product_id)
        distribution = {str(star): 0 for star in range(1, 6)}
        for rating, count in rows:
            distribution[str(rating)] = count
        count = sum(distribution.values())
        average = (round(sum(int(s) * n for s, n in distribution.items()) / count, 2)
                   if count else None)
        return RatingSummary(product_id=product_id, count=count, average=average,
                             distribution=distribution).model_dump(mode="json")

    async def _approved_set_changed(self, session: AsyncSession, review: Review,
                                    approved_now: bool) -> None:
        if approved_now:
            await add_event(session, events.review_approved(
                review, source=self.settings.service_name))
        await self._publish_rating(session, review.product_id)

    async def _publish_rating(self, session: AsyncSession, product_id: uuid.UUID) -> None:
        summary = await self._load_summary(product_id, session)
        await add_event(session, events.rating_changed(
            product_id, summary, source=self.settings.service_name))

    async def _drop_summary(self, product_id: uuid.UUID, changed: bool) -> None:
        if changed:
            await self.cache.invalidate(str(product_id))

