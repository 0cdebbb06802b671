"""The review service's settings: the core's, plus the moderation screen."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from kommerce.contracts.events.order import ORDER_TOPIC
from services.core.settings import ServiceSettings

#: A starting list; operators replace it through KOMMERCE_BANNED_WORDS.
DEFAULT_BANNED_WORDS = ["scam", "idiot", "viagra", "casino", "fuck", "shit"]


class ReviewSettings(ServiceSettings):
    service_name: str = Field(
        "review", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, event source and topic "
        "('review.events').",
    )
    banned_words: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_BANNED_WORDS),
        description="Words (comma-separated) that get a review rejected automatically; "
        "matched as whole words, case-insensitively.",
    )
    auto_approve_clean_reviews: bool = Field(
        True, description="Publish reviews the screen finds nothing in at once; otherwise "
        "every review waits in the moderation queue.",
    )
    order_topic: str = Field(
        ORDER_TOPIC, description="Topic the order service publishes order.status_changed "
        "on (paid and cancelled orders make and unmake verified purchases).")
    product_service_url: str | None = Field(
        None, description="Product service (``kommerce up`` sets KOMMERCE_PRODUCT_SERVICE_URL): "
        "maps an order line's variant to its product for the verified-purchase flag.")
    rating_cache_ttl_seconds: int = Field(
        600, ge=1, description="How long a product's rating summary stays cached; every "
        "change to its approved reviews drops it sooner.",
    )

    @field_validator("banned_words", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [w.strip().lower() for w in value.split(",") if w.strip()]
        return value
