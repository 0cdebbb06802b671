"""SQL for reviews, votes and verified purchases: module functions on the caller's session,
which owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.review.models import Purchase, Review, Vote
from services.review.moderation import ReviewStatus
from services.review.schemas import ReviewSort

# -- reviews --------------------------------------------------------------------------------


async def review(session: AsyncSession, review_id: uuid.UUID, *,
                 for_update: bool = False) -> Review | None:
    if not for_update:
        return await session.get(Review, review_id)
    query = select(Review).where(Review.id == review_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def add_review(session: AsyncSession, new: Review) -> None:
    """Insert ``new`` now, so a second review of the product by its author fails here (the
    unique constraint) rather than at commit."""
    session.add(new)
    await session.flush()


async def delete_review(session: AsyncSession, gone: Review) -> None:
    await session.delete(gone)
    await session.flush()


_ORDER: dict[ReviewSort, tuple[Any, ...]] = {
    ReviewSort.NEWEST: (Review.created_at.desc(), Review.id),
    ReviewSort.HELPFUL: (Review.helpful_count.desc(), Review.created_at.desc(), Review.id),
    ReviewSort.RATING_DESC: (Review.rating.desc(), Review.created_at.desc(), Review.id),
    ReviewSort.RATING_ASC: (Review.rating.asc(), Review.created_at.desc(), Review.id),
}


async def _page(session: AsyncSession, where: tuple[ColumnElement[bool], ...],
                order: tuple[Any, ...], offset: int, limit: int) -> tuple[list[Review], int]:
    total = (await session.execute(
        select(func.count()).select_from(Review).where(*where))).scalar_one()
    rows = (await session.execute(
        select(Review).where(*where).order_by(*order).offset(offset).limit(limit))).scalars()
    return list(rows), total


async def approved_page(session: AsyncSession, product_id: uuid.UUID, sort: ReviewSort, *,
                        offset: int, limit: int) -> tuple[list[Review], int]:
    """One page of a product's published reviews in ``sort`` order, and how many there are."""
    return await _page(session, (Review.product_id == product_id,
                                 Review.status == ReviewStatus.APPROVED),
                       _ORDER[sort], offset, limit)


async def oldest_page(session: AsyncSession, status: str, *, offset: int,
                      limit: int) -> tuple[list[Review], int]:
    """One page of the reviews in ``status``, oldest first, and how many there are."""
    return await _page(session, (Review.status == status,),
                       (Review.created_at.asc(), Review.id), offset, limit)


async def approved_ratings(session: AsyncSession,
                           product_id: uuid.UUID) -> Sequence[tuple[int, int]]:
    """(stars, how many approved reviews give them) for the product."""
    rows = (await session.execute(
        select(Review.rating, func.count()).where(
            Review.product_id == product_id, Review.status == ReviewStatus.APPROVED)
        .group_by(Review.rating))).all()
    return [(rating, count) for rating, count in rows]


# -- votes ----------------------------------------------------------------------------------


async def put_vote(session: AsyncSession, review_id: uuid.UUID, user_id: str,
                   helpful: bool) -> None:
    """The user's vote on the review; a second vote replaces the first."""
    statement = insert(Vote).values(review_id=review_id, user_id=user_id, helpful=helpful)
    statement = statement.on_conflict_do_update(
        index_elements=[Vote.review_id, Vote.user_id],
        set_={"helpful": statement.excluded.helpful})
    await session.execute(statement)


async def delete_vote(session: AsyncSession, review_id: uuid.UUID, user_id: str) -> None:
    await session.execute(delete(Vote).where(Vote.review_id == review_id,
                                             Vote.user_id == user_id))


async def recount_votes(session: AsyncSession, counted: Review) -> None:
    """Store the review's helpful and unhelpful counts from its votes, on the row and on
    ``counted``."""
    helpful, unhelpful = (await session.execute(
        select(func.count().filter(Vote.helpful.is_(True)),
               func.count().filter(Vote.helpful.is_(False)))
        .where(Vote.review_id == counted.id))).one()
    await session.execute(update(Review).where(Review.id == counted.id).values(
        helpful_count=helpful, unhelpful_count=unhelpful))
    counted.helpful_count, counted.unhelpful_count = helpful, unhelpful


# -- verified purchases ---------------------------------------------------------------------


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


async def record_purchases(session: AsyncSession, order_id: uuid.UUID, user_id: str,
                           product_ids: Sequence[uuid.UUID], *, active: bool,
                           event_id: uuid.UUID) -> None:
    """One purchase per (order, product). An active one never overwrites a stored record;
    a withdrawn one (``active=False``) withdraws it for good."""
    rows = [{"order_id": order_id, "product_id": product_id, "user_id": user_id,
             "active": active, "event_id": event_id} for product_id in product_ids]
    statement = insert(Purchase).values(rows)
    if active:
        statement = statement.on_conflict_do_nothing(
            index_elements=[Purchase.order_id, Purchase.product_id])
    else:
        statement = statement.on_conflict_do_update(
            index_elements=[Purchase.order_id, Purchase.product_id],
            set_={"active": False, "event_id": event_id, "updated_at": func.now()})
    await session.execute(statement)


async def rederive_verified(session: AsyncSession, user_id: str,
                            product_ids: Sequence[uuid.UUID]) -> int:
    """Set the verified-purchase flag on the user's reviews of these products from their
    active purchases; how many reviews changed."""
    verified = exists().where(Purchase.user_id == Review.user_id,
                              Purchase.product_id == Review.product_id,
                              Purchase.active.is_(True))
    result = await session.execute(
        update(Review)
        .where(Review.user_id == user_id, Review.product_id.in_(product_ids),
               Review.verified_purchase.is_distinct_from(verified))
        .values(verified_purchase=verified)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # an UPDATE's result has it; Result[Any] does not say so
