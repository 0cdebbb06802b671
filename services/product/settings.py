"""The product service's settings: the core's, plus what reservations and shards need.

Every value keeps the ``KOMMERCE_`` prefix, so the one Secret/ConfigMap the operator mounts
feeds the core and the service alike (``KOMMERCE_RESERVATION_DEFAULT_TTL_SECONDS`` …).
"""

from __future__ import annotations

from pydantic import Field

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
        86_400, ge=1, description="Longest hold a client may ask for; longer holds keep stock "
        "from other shoppers.",
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
