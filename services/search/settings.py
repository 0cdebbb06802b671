"""The search service's settings: the core's, plus which engine answers queries."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from kommerce.contracts.events.product import PRODUCT_TOPIC
from kommerce.contracts.events.review import REVIEW_TOPIC
from services.core.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    service_name: str = Field(
        "search", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, consumer group.",
    )
    search_backend: Literal["postgres", "elasticsearch"] = Field(
        "postgres",
        description="Engine answering queries: 'postgres' (full-text search in the service's "
        "own schema, the embedded default) or 'elasticsearch' (production).",
    )
    elasticsearch_url: str = Field(
        "http://127.0.0.1:9200",
        validation_alias=AliasChoices("KOMMERCE_ELASTICSEARCH_URL", "ELASTICSEARCH_URL",
                                      "elasticsearch_url"),
        description="Elasticsearch node(s), comma-separated; also read from ELASTICSEARCH_URL.",
    )
    search_index_alias: str = Field(
        "products", pattern=r"^[a-z][a-z0-9_-]{0,100}$",
        description="Alias queries and writes go through; each rebuild creates "
        "'<alias>-<timestamp>' and moves the alias to it atomically.",
    )
    elasticsearch_timeout_seconds: float = Field(
        5.0, gt=0, description="Per-request timeout of the Elasticsearch client.")
    product_topic: str = Field(
        PRODUCT_TOPIC, description="Topic the product service publishes catalog events on.")
    product_service_url: str | None = Field(
        None, description="Product service (``kommerce up`` sets KOMMERCE_PRODUCT_SERVICE_URL): "
        "a search store that is empty at start-up is filled from its catalog. Unset: it waits "
        "for product events.")
    review_topic: str = Field(
        REVIEW_TOPIC, description="Topic the review service publishes rating.changed on.")
    analytics_window_days: int = Field(
        30, ge=1, le=3650, description="How far back the analytics endpoint looks by default.")
