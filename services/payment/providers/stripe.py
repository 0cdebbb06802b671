"""The provider a production shop charges with (``payment_backend=stripe``), through Stripe's
own library so that retries, the idempotency header and the errors are Stripe's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import stripe

from services.core.errors import Unprocessable
from services.payment.providers.base import (
    ChargeResult,
    ChargeStatus,
    GatewayError,
    RefundResult,
    SavedCard,
    check_amount,
    check_payment_method,
)

if TYPE_CHECKING:
    from stripe.params import CustomerCreateParams, RefundCreateParams


class StripeGateway:
    """Stripe PaymentIntents, confirmed server-side with the shopper's payment method."""

    def __init__(self, api_key: str, *, api_base: str | None = None,
                 max_network_retries: int = 2,
                 http_client: stripe.HTTPClient | None = None) -> None:
        # aiohttp rather than httpx underneath, as for the services' own calls
        # (services.core.http): less CPU per call (the README's design measurements).
        self._http = http_client or stripe.AIOHTTPClient()
        options: dict[str, Any] = {"http_client": self._http,
                                   "max_network_retries": max_network_retries}
        if api_base:
            options["base_addresses"] = {"api": api_base}
        self._client = stripe.StripeClient(api_key, **options)

    async def aclose(self) -> None:
        """Close the HTTP session (made on the first call, in the running loop)."""
        await self._http.close_async()

    async def create_customer(self, *, email: str | None, idempotency_key: str) -> str:
        params: CustomerCreateParams = {"email": email} if email else {}
        customer = await self._call(self._client.v1.customers.create_async(
            params=params, options={"idempotency_key": idempotency_key}))
        return str(customer.id)

    async def charge(self, *, amount: int, currency: str, payment_method: str,
                     idempotency_key: str, customer: str | None = None,
                     metadata: dict[str, str] | None = None) -> ChargeResult:
        check_amount(amount, currency)
        params: dict[str, Any] = {
            "amount": amount, "currency": currency,
            "payment_method": check_payment_method(payment_method),
            "payment_method_types": ["card"], "confirm": True,
            "metadata": metadata or {},
            "expand": ["payment_method", "latest_charge"],
        }
        if customer:
            params["customer"] = customer
        try:
            # The library's raw request: the same encoding, retries, idempotency header and
            # errors (a decline still raises CardError), but the answer stays parsed JSON.
            # The typed call turned the PaymentIntent, with its method and charge expanded,
            # into nested StripeObjects for the few fields read once, several times the CPU
            # per charge (the README's design measurements).
            response = await self._client.raw_request_async(
                "post", "/v1/payment_intents", **params, idempotency_key=idempotency_key)
            intent = response.data
        except stripe.CardError as exc:
            return _declined(exc, amount, currency)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _from_intent(intent)

    async def refund(self, *, intent_id: str, amount: int | None,
                     idempotency_key: str) -> RefundResult:
        params: RefundCreateParams = {"payment_intent": intent_id}
        if amount is not None:
            params["amount"] = amount
        refund = await self._call(self._client.v1.refunds.create_async(
            params=params, options={"idempotency_key": idempotency_key}))
        return RefundResult(refund_id=str(refund.id), intent_id=intent_id,
                            amount=int(refund.amount), status=str(refund.status))

    async def cancel(self, *, intent_id: str, idempotency_key: str) -> ChargeResult:
        intent = await self._call(self._client.v1.payment_intents.cancel_async(
            intent_id, options={"idempotency_key": idempotency_key}))
        return _from_intent(intent)

    async def complete_action(self, *, intent_id: str, idempotency_key: str) -> ChargeResult:
        """Read the intent: the shopper did the challenge in the browser (Stripe.js with the
        client secret), so Stripe already knows the outcome; nothing is changed here."""
        intent = await self._call(self._client.v1.payment_intents.retrieve_async(
            intent_id, params={"expand": ["payment_method", "latest_charge"]}))
        return _from_intent(intent)

    async def attach(self, *, customer: str, payment_method: str,
                     idempotency_key: str) -> SavedCard:
        method = await self._call(self._client.v1.payment_methods.attach_async(
            check_payment_method(payment_method), params={"customer": customer},
            options={"idempotency_key": idempotency_key}))
        return SavedCard(id=str(method.id), brand=_attr(method, "card", "brand"),
                         last4=_attr(method, "card", "last4"))

    async def detach(self, *, payment_method: str, idempotency_key: str) -> None:
        await self._call(self._client.v1.payment_methods.detach_async(
            check_payment_method(payment_method), options={"idempotency_key": idempotency_key}))

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except stripe.StripeError as exc:
            raise _translate(exc) from exc


def _translate(exc: stripe.StripeError) -> Exception:
    """Client mistakes become 4xx with Stripe's message; outages become 503, never 500."""
    if isinstance(exc, stripe.IdempotencyError):
        return Unprocessable("this idempotency key was used with different parameters",
                             code="idempotency_key_reused")
    if isinstance(exc, stripe.InvalidRequestError):
        return Unprocessable(exc.user_message or "the payment provider refused the request",
                             code=exc.code or "payment_invalid_request")
    return GatewayError("the payment provider is unavailable; try again shortly")


def _attr(obj: Any, *path: str) -> Any:
    for name in path:
        if obj is None or isinstance(obj, str):
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


_STATUS = {"succeeded": ChargeStatus.SUCCEEDED, "requires_action": ChargeStatus.REQUIRES_ACTION,
           "processing": ChargeStatus.PROCESSING, "canceled": ChargeStatus.CANCELED,
           "requires_payment_method": ChargeStatus.DECLINED}


def _from_intent(intent: Mapping[str, Any]) -> ChargeResult:
    """A PaymentIntent as JSON or as the library's StripeObject (a dict as well)."""
    status = _STATUS.get(str(intent["status"]), ChargeStatus.PROCESSING)
    error = _attr(intent, "last_payment_error")
    return ChargeResult(
        intent_id=str(intent["id"]), status=status, amount=int(intent["amount"]),
        currency=str(intent["currency"]),
        client_secret=_attr(intent, "client_secret") if status is ChargeStatus.REQUIRES_ACTION
        else None,
        card_brand=_attr(intent, "payment_method", "card", "brand"),
        card_last4=_attr(intent, "payment_method", "card", "last4"),
        decline_code=_attr(error, "decline_code") or _attr(error, "code")
        if status is ChargeStatus.DECLINED else None,
        failure_message=_attr(error, "message") if status is ChargeStatus.DECLINED else None,
        risk_level=_attr(intent, "latest_charge", "outcome", "risk_level"),
    )


def _declined(exc: stripe.CardError, amount: int, currency: str) -> ChargeResult:
    error = exc.error
    return ChargeResult(
        intent_id=_attr(error, "payment_intent", "id"), status=ChargeStatus.DECLINED,
        amount=amount, currency=currency,
        card_brand=_attr(error, "payment_method", "card", "brand"),
        card_last4=_attr(error, "payment_method", "card", "last4"),
        decline_code=_attr(error, "decline_code") or exc.code or "card_declined",
        failure_message=exc.user_message or "Your card was declined.",
        risk_level=_attr(error, "payment_intent", "latest_charge", "outcome", "risk_level"),
    )
