"""The one interface every provider answers, so the payment service never knows which one
moves the money, and the checks each provider must make before anything reaches the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.core.errors import InvalidRequest, ServiceUnavailable

#: Stripe payment method ids. Anything else — above all a run of digits that might be a card
#: number — is refused before it reaches a log line, a database or the wire.
PAYMENT_METHOD_PATTERN = re.compile(r"^pm_[A-Za-z0-9_]{1,200}$")


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    #: The shopper must authenticate (3-D Secure); ``client_secret`` lets Stripe.js do it.
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    DECLINED = "declined"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """A PaymentIntent's outcome with only what we may keep (PCI DSS: brand and last4)."""

    intent_id: str | None
    status: ChargeStatus
    amount: int
    currency: str
    client_secret: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    decline_code: str | None = None
    failure_message: str | None = None
    #: Stripe Radar's ``outcome.risk_level``: normal, elevated or highest.
    risk_level: str | None = None


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_id: str
    intent_id: str
    amount: int
    status: str


@dataclass(frozen=True, slots=True)
class SavedCard:
    """A payment method kept on a customer for later: its id and what a shopper needs to
    recognise it — never the number."""

    id: str
    brand: str | None
    last4: str | None


class GatewayError(ServiceUnavailable):
    """The payment provider could not be reached or failed on its side; try again later."""

    code = "payment_provider_unavailable"


class PaymentGateway(Protocol):
    """What the payment service needs from a provider.

    Callers pass Stripe payment method tokens (``pm_...``) that the browser obtained from
    Stripe.js, never a card number, and get back brand and last four. Every mutating call
    takes an idempotency key (Stripe's ``Idempotency-Key``), so a retry after a lost reply
    repeats the first charge or refund instead of making another.
    """

    async def create_customer(self, *, email: str | None, idempotency_key: str) -> str: ...

    async def charge(self, *, amount: int, currency: str, payment_method: str,
                     idempotency_key: str, customer: str | None = None,
                     metadata: dict[str, str] | None = None) -> ChargeResult: ...

    async def refund(self, *, intent_id: str, amount: int | None,
                     idempotency_key: str) -> RefundResult: ...

    async def cancel(self, *, intent_id: str, idempotency_key: str) -> ChargeResult: ...

    async def complete_action(self, *, intent_id: str, idempotency_key: str) -> ChargeResult:
        """The intent after the shopper's 3-D Secure challenge."""
        ...

    async def attach(self, *, customer: str, payment_method: str,
                     idempotency_key: str) -> SavedCard: ...

    async def detach(self, *, payment_method: str, idempotency_key: str) -> None: ...


def check_payment_method(payment_method: str) -> str:
    """Refuse anything that is not a tokenized payment method (never echo it back)."""
    if not PAYMENT_METHOD_PATTERN.fullmatch(payment_method):
        raise InvalidRequest("payment_method must be a Stripe payment method id (pm_...); "
                             "card numbers are never accepted", code="invalid_payment_method")
    return payment_method


def check_amount(amount: int, currency: str) -> None:
    if amount < 1:
        raise InvalidRequest("amount must be at least 1 (minor units)", code="invalid_amount")
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise InvalidRequest("currency must be a three-letter ISO code in lower case",
                             code="invalid_currency")
