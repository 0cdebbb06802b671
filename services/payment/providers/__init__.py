"""The payment providers behind one interface, and the one place that picks a provider from
the settings, so adding a provider touches this package and nothing above it.
"""

from __future__ import annotations

from services.payment.providers.base import (
    PAYMENT_METHOD_PATTERN,
    ChargeResult,
    ChargeStatus,
    GatewayError,
    PaymentGateway,
    RefundResult,
    SavedCard,
    check_amount,
    check_payment_method,
)
from services.payment.providers.sandbox import SandboxGateway
from services.payment.providers.stripe import StripeGateway
from services.payment.settings import PaymentSettings

__all__ = [
    "PAYMENT_METHOD_PATTERN",
    "ChargeResult",
    "ChargeStatus",
    "GatewayError",
    "PaymentGateway",
    "RefundResult",
    "SavedCard",
    "check_amount",
    "check_payment_method",
    "gateway_from_settings",
]


def gateway_from_settings(settings: PaymentSettings) -> PaymentGateway:
    """The provider ``payment_backend`` names: Stripe with its key, else the sandbox."""
    if settings.payment_backend == "stripe":
        if settings.stripe_api_key is None:
            raise ValueError("payment_backend=stripe needs stripe_api_key")
        return StripeGateway(settings.stripe_api_key.get_secret_value(),
                             api_base=settings.stripe_api_base)
    return SandboxGateway(state_path=settings.sandbox_state_path)
