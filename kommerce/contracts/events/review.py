"""What the review service publishes (topic ``review.events``, keyed by product id):

* ``review.created`` / ``review.approved`` — one review, its rating and where moderation
  put it;
* ``rating.changed`` — the product's new rating summary, which the search service ranks by.
"""

from __future__ import annotations

import uuid
from typing import ClassVar, Self

from pydantic import Field, model_validator

from kommerce.contracts.events.base import EventPayload, topic_of

REVIEW_TOPIC = topic_of("review")
REVIEW_CREATED = "review.created"
REVIEW_APPROVED = "review.approved"
RATING_CHANGED = "rating.changed"


class ReviewEvent(EventPayload):
    DESCRIBES: ClassVar[str] = "a review event"

    review_id: uuid.UUID
    product_id: uuid.UUID
    user_id: str
    rating: int = Field(ge=1, le=5)
    status: str


class RatingChanged(EventPayload):
    """A product's approved reviews summed up: ``average`` is None while there are none."""

    DESCRIBES: ClassVar[str] = "a rating summary"

    product_id: uuid.UUID
    count: int = Field(ge=0, description="Approved reviews.")
    average: float | None = Field(None, description="Mean rating, 2 decimals.")
    distribution: dict[str, int] = Field(default_factory=dict,
                                         description="Approved reviews per star, '1'..'5'.")

    @model_validator(mode="after")
    def _average_is_a_rating(self) -> Self:
        if self.rating is not None and not 1.0 <= self.rating <= 5.0:
            raise ValueError(f"rating {self.average!r} over {self.count} reviews is out of "
                             "range")
        return self

    @property
    def rating(self) -> float | None:
        """The average to rank by: None when there is nothing to average."""
        return None if self.average is None or self.count == 0 else self.average
