"""The product service's settings: the core's, plus what reservations and shards need.

Every value keeps the ``KOMMERCE_`` prefix, so the one Secret/ConfigMap the operator mounts
feeds the core and the service alike (``KOMMERCE_RESERVATION_DEFAULT_TTL_SECONDS`` …).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from services.core.settings import ServiceSettings


class ProductSettings(ServiceSettings):
    service_name: str = Field(
        "product", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, event source and topic "
        "('product.events').",
    )
    product_cache_ttl_seconds: int = Field(
        3600, ge=1, description="How long a product document stays in Redis (the reference's "
        "1 h); every write and stock change drops it sooner.",
    )
    missing_product_cache_ttl_seconds: int = Field(
        30, ge=1, description="How long 'no such product' is remembered, so scans of random "
        "ids do not reach the shards every time.",
    )
    reservation_default_ttl_seconds: int = Field(
        900, ge=1, description="Hold time of a reservation whose request names none (15 min: "
        "long enough for a checkout's payment step).",
    )
    reservation_max_ttl_seconds: int = Field(
        1200, ge=60, le=3600, description="Longest hold the checkout may ask for (20 min: the "
        "order saga's 15 minutes for 3-D Secure plus its step retries). Only the service "
        "identity reserves, but a hold still keeps stock from every shopper, so it stays "
        "short; the order service's KOMMERCE_RESERVATION_TTL_SECONDS must fit inside it.",
    )
    reservation_sweep_interval_seconds: float = Field(
        5.0, gt=0, description="How often expired reservations are looked for and released.",
    )
    reservation_sweep_batch_size: int = Field(
        200, ge=1, description="Expired reservations released per shard transaction.",
    )
    shard_pool_size: int = Field(
        5, ge=1, description="Connections kept open per shard database (besides the service's "
        "own pool).",
    )
    shard_retire_grace_seconds: float = Field(
        30.0, ge=0, description="How long a shard dropped from the map (or given a new "
        "database) keeps its engine, so requests in flight finish and its outbox drains.",
    )
    sku_claim_stale_seconds: float = Field(
        60.0, gt=0, description="Age after which a SKU claim whose product exists on no shard "
        "is taken over (left by a create that crashed between the two databases).",
    )

    @model_validator(mode="after")
    def _default_hold_within_the_maximum(self) -> Self:
        if self.reservation_default_ttl_seconds > self.reservation_max_ttl_seconds:
            raise ValueError(
                f"reservation_default_ttl_seconds ({self.reservation_default_ttl_seconds}) "
                f"exceeds reservation_max_ttl_seconds ({self.reservation_max_ttl_seconds})")
        return self
