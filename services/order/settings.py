"""The order service's settings: the core's, plus the saga's timing and where the saga's
participants (product, payment, shipping) answer."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    service_name: str = Field(
        "order", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, event source and topic.",
    )
    saga_step_timeout_seconds: float = Field(
        30.0, gt=0, description="How long a saga step may go unanswered before it is resent "
        "(and, after saga_max_attempts, compensated).",
    )
    saga_max_attempts: int = Field(3, ge=1, description="Sends of a forward step before the "
                                   "saga gives up and compensates.")
    saga_customer_action_timeout_seconds: float = Field(
        900.0, gt=0, description="Time a shopper has to finish 3-D Secure.")
    saga_timer_interval_seconds: float = Field(
        1.0, gt=0, description="How often sagas past their deadline are looked for.")
    saga_inline_concurrency: int = Field(
        32, ge=0, description="Saga commands run at once in this process as soon as they "
        "commit, ahead of their delivery by the bus (which stays the durable path); 0 = "
        "only the bus runs them.")
    database_pool_size: int = Field(
        50, ge=1, description="Connections kept open once opened: more than the core's "
        "default, because every inline saga command holds one (and the saga's row lock) "
        "while its participant answers, besides the checkouts and the bus consumers.")
    cart_ttl_seconds: int = Field(
        30 * 86_400, ge=60, description="How long an untouched cart is kept.")
    product_service_url: str = Field(
        "http://127.0.0.1:8002", description="Product service: prices by variant id and the "
        "stock reservations (``kommerce up`` sets KOMMERCE_PRODUCT_SERVICE_URL).")
    payment_service_url: str = Field(
        "http://127.0.0.1:8005", description="Payment service: charges and refunds.")
    shipping_service_url: str = Field(
        "http://127.0.0.1:8007", description="Shipping service: shipments and their cancellation.")
    reservation_ttl_seconds: int = Field(
        1200, ge=60, description="How long the product service holds a checkout's stock "
        "before its sweeper gives it back (a saga that never finishes frees it). 20 min: "
        "the 15 minutes for 3-D Secure plus the steps' retries; at most the product "
        "service's reservation_max_ttl_seconds, or every reservation is refused. A hold "
        "that ends before the commit fails the commit, and the saga refunds and cancels.")
