"""The gateway's settings: the core's, plus where routes come from and the edge's limits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.core.settings import ServiceSettings, comma_or_json_list


class GatewaySettings(ServiceSettings):
    """Read from ``KOMMERCE_*`` like every service's settings.

    In a cluster the operator sets ``KOMMERCE_ROUTE_TABLE`` to the mounted route table; the
    ``*_service_url`` values only feed the static table used when no file is configured
    (local runs, every service on its own loopback port).
    """

    service_name: str = Field(
        "gateway", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: log field, metric and trace resource.")

    route_table: Path | None = Field(
        None,
        description="Route table JSON rendered by the operator (ConfigMap "
        "kommerce-gateway-routes, key routes.json; a folder holding routes.json works too); "
        "hot-reloaded. None = the static local table built from the *_service_url values.")

    strip_path_prefix: str = Field(
        "/api", pattern=r"^(/[-A-Za-z0-9._~]+)*$",
        description="Public path prefix removed before forwarding, and passed on as "
        "X-Forwarded-Prefix: a shopper calls /api/products/1, the product service serves "
        "/products/1. Route table prefixes are the public paths. Empty = forward unchanged.")

    user_service_url: str = Field("http://127.0.0.1:8001",
                                  description="User service, for the static local table.")
    product_service_url: str = Field("http://127.0.0.1:8002",
                                     description="Product service, for the static local table.")
    search_service_url: str = Field("http://127.0.0.1:8003",
                                    description="Search service, for the static local table.")
    order_service_url: str = Field("http://127.0.0.1:8004",
                                   description="Order service, for the static local table.")
    payment_service_url: str = Field("http://127.0.0.1:8005",
                                     description="Payment service, for the static local table.")
    review_service_url: str = Field("http://127.0.0.1:8006",
                                    description="Review service, for the static local table.")
    shipping_service_url: str = Field(
        "http://127.0.0.1:8007", description="Shipping service, for the static local table.")

    max_request_body_bytes: int = Field(
        10 * 1024 * 1024, ge=0,
        description="Largest request body forwarded (413 beyond it); bodies are streamed, so "
        "this protects the services behind, not the gateway's memory.")
    rate_limit_timeout_seconds: float = Field(
        0.25, gt=0,
        description="How long a rate-limit check may wait for Redis. Slower or failing checks "
        "let the request through (fail open): a Redis outage must not take the shop down.")
    upstream_max_connections: int = Field(
        200, ge=1, description="Open connections kept per upstream service (per replica).")
    auth_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/api/auth", "/api/users/me/password"],
        description="Public paths (and what lies below them) of login, registration and "
        "password changes, whose answers wait for password hashing and so get "
        "auth_route_timeout_seconds (comma-separated or a JSON list).")
    auth_route_timeout_seconds: float | None = Field(
        None, gt=0,
        description="How long the auth route's service may take to answer. Default: from "
        "the hash cost, two hashes' longest wait (a login may verify and rehash) plus 5 s "
        "for the hashing itself and the database: 21 s with the default "
        "password_hash_max_wait_seconds of 8.")

    @field_validator("auth_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        return comma_or_json_list(value)

    @property
    def auth_timeout_seconds(self) -> float:
        """The auth route's timeout in force."""
        if self.auth_route_timeout_seconds is not None:
            return self.auth_route_timeout_seconds
        return 2 * self.password_hash_max_wait_seconds + 5
