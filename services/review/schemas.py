"""Request and response shapes of the review API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.core.pci import MASK_CARD_NUMBERS
from services.review.moderation import ReviewStatus

# Reviews are published: a card number in one is masked rather than the review refused,
# so the rest of what the shopper wrote is kept (services.core.pci).
Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200),
                  MASK_CARD_NUMBERS]
Body = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000),
                 MASK_CARD_NUMBERS]
Rating = Annotated[int, Field(ge=1, le=5, description="1 (worst) to 5 (best) stars.")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviewIn(_In):
    rating: Rating
    title: Title = ""
    body: Body = ""


class ReviewPatch(_In):
    rating: Rating | None = None
    title: Title | None = None
    body: Body | None = None

    @model_validator(mode="after")
    def _something(self) -> ReviewPatch:
        if self.rating is None and self.title is None and self.body is None:
            raise ValueError("change at least one of rating, title, body")
        return self


class ReviewOut(BaseModel):
    id: uuid.UUID
    product_id: uuid.UUID
    user_id: str
    rating: int
    title: str
    body: str
    status: ReviewStatus
    flags: list[str]
    moderation_reason: str | None
    verified_purchase: bool
    helpful_count: int
    unhelpful_count: int
    created_at: datetime
    updated_at: datetime


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    total: int
    page: int
    size: int


class ReviewSort(StrEnum):
    NEWEST = "newest"
    HELPFUL = "helpful"
    RATING_DESC = "rating_desc"
    RATING_ASC = "rating_asc"


class VoteIn(_In):
    helpful: bool = Field(description="True: the review helped; false: it did not.")


class ModerationIn(_In):
    decision: ReviewStatus = Field(description="'approved' or 'rejected'.")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500),
                      MASK_CARD_NUMBERS] | None = None


class RatingSummary(BaseModel):
    product_id: uuid.UUID
    count: int = Field(description="Approved reviews.")
    average: float | None = Field(description="Mean rating of approved reviews, 2 decimals; "
                                  "null without reviews.")
    distribution: dict[str, int] = Field(description="Approved reviews per star, '1'..'5'.")
