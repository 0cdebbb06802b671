"""The payment service's settings: the core's, plus which payment backend to use.

The default backend is the local sandbox, so an embedded shop checks out without a Stripe
account; production sets ``KOMMERCE_PAYMENT_BACKEND=stripe`` with the key and webhook
secret from a Secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from services.core.settings import ServiceSettings, _env


class PaymentSettings(ServiceSettings):
    service_name: str = Field(
        "payment", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, event source and topic.",
    )
    payment_backend: Literal["sandbox", "stripe"] = Field(
        "sandbox", description="'stripe' charges through Stripe; 'sandbox' answers locally "
        "as Stripe's test payment methods do.",
    )
    sandbox_state_path: Path | None = Field(
        None, description="File (JSON lines, appended) in which the sandbox keeps its "
        "charges, refunds and saved methods across restarts (unset: in memory only).",
    )
    stripe_api_key: SecretStr | None = Field(
        None, validation_alias=_env("stripe_api_key", "STRIPE_API_KEY"),
        description="Stripe secret key (sk_...); also read from STRIPE_API_KEY, the variable "
        "the operator renders for the CommerceService's stripe connection.")
    stripe_api_base: str | None = Field(
        None, description="Override of Stripe's API address (tests point it at stripe-mock).",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        None, description="Signing secret of the webhook endpoint (whsec_...); without it "
        "every webhook is refused.",
    )
    webhook_tolerance_seconds: int = Field(
        300, ge=1, description="Oldest webhook signature timestamp accepted (replay guard).",
    )
    fraud_review_risk_level: Literal["elevated", "highest"] = Field(
        "elevated", description="Stripe risk level from which a successful payment is "
        "flagged for review instead of being treated as clean.",
    )
