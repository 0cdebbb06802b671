"""The review service's routes: parse, call the service, shape the response.

Reading published reviews and rating summaries is public; writing and voting need a
signed-in shopper; the moderation queue and decisions need ``admin``.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from services.core.auth import AdminUser, CurrentUser, OptionalUser
from services.core.state import AppState
from services.review.moderation import ReviewStatus
from services.review.schemas import (
    ModerationIn,
    RatingSummary,
    ReviewIn,
    ReviewOut,
    ReviewPage,
    ReviewPatch,
    ReviewSort,
    VoteIn,
)
from services.review.service import ReviewService

router = APIRouter(tags=["reviews"])

Page = Annotated[int, Query(ge=1, le=10_000)]
Size = Annotated[int, Query(ge=1, le=100)]


#: Built by the app's lifespan (see :mod:`.app`).
REVIEWS = AppState[ReviewService]("reviews")


def _service(request: Request) -> ReviewService:
    return REVIEWS.of(request)


# Each product-scoped route is also served under /reviews/products/..., so that it is
# reachable through the gateway, whose route table sends /api/products/... to the product
# service and /api/reviews/... here.
@router.post("/products/{product_id}/reviews", response_model=ReviewOut,
             status_code=status.HTTP_201_CREATED)
@router.post("/reviews/products/{product_id}", response_model=ReviewOut,
             status_code=status.HTTP_201_CREATED)
async def write_review(request: Request, product_id: uuid.UUID, review: ReviewIn,
                       author: CurrentUser) -> ReviewOut:
    return await _service(request).create(product_id, author, review)


@router.get("/products/{product_id}/reviews", response_model=ReviewPage)
@router.get("/reviews/products/{product_id}", response_model=ReviewPage)
async def product_reviews(request: Request, product_id: uuid.UUID,
                          sort: ReviewSort = ReviewSort.NEWEST, page: Page = 1,
                          size: Size = 20) -> ReviewPage:
    return await _service(request).list_for_product(product_id, sort, page, size)


@router.get("/products/{product_id}/rating", response_model=RatingSummary)
@router.get("/reviews/products/{product_id}/rating", response_model=RatingSummary)
async def product_rating(request: Request, product_id: uuid.UUID) -> RatingSummary:
    return await _service(request).summary(product_id)


@router.get("/reviews/{review_id}", response_model=ReviewOut)
async def get_review(request: Request, review_id: uuid.UUID,
                     caller: OptionalUser) -> ReviewOut:
    return await _service(request).get(review_id, caller)


@router.patch("/reviews/{review_id}", response_model=ReviewOut)
async def edit_review(request: Request, review_id: uuid.UUID, patch: ReviewPatch,
                      author: CurrentUser) -> ReviewOut:
    return await _service(request).edit(review_id, author, patch)


@router.delete("/reviews/{review_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
async def delete_review(request: Request, review_id: uuid.UUID,
                        caller: CurrentUser) -> Response:
    await _service(request).delete(review_id, caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/reviews/{review_id}/vote", response_model=ReviewOut)
async def vote(request: Request, review_id: uuid.UUID, vote_in: VoteIn,
               voter: CurrentUser) -> ReviewOut:
    return await _service(request).vote(review_id, voter, vote_in.helpful)


@router.delete("/reviews/{review_id}/vote", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
async def withdraw_vote(request: Request, review_id: uuid.UUID,
                        voter: CurrentUser) -> Response:
    await _service(request).withdraw_vote(review_id, voter)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# The moderation routes are also served under /reviews/..., reachable through the gateway
# (/api/reviews/moderation/queue, /api/reviews/<id>/moderation); the service itself checks
# that the caller is an admin.
@router.get("/admin/reviews", response_model=ReviewPage)
@router.get("/reviews/moderation/queue", response_model=ReviewPage)
async def moderation_queue(request: Request, _admin: AdminUser,
                           status_filter: Annotated[ReviewStatus, Query(alias="status")] =
                           ReviewStatus.PENDING,
                           page: Page = 1, size: Size = 50) -> ReviewPage:
    return await _service(request).queue(status_filter, page, size)


@router.post("/admin/reviews/{review_id}/moderation", response_model=ReviewOut)
@router.post("/reviews/{review_id}/moderation", response_model=ReviewOut)
async def moderate(request: Request, review_id: uuid.UUID, moderation: ModerationIn,
                   _admin: AdminUser) -> ReviewOut:
    return await _service(request).moderate(review_id, moderation)
