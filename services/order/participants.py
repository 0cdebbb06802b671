"""The saga's participants over HTTP: the product service's reservations, the payment
service and the shipping service.

Identity: the order service calls them as itself — an access token it signs with its own
service key (:mod:`services.core.signing`) for subject ``service:<name>``, the ``service``
role and the called service as audience, one token per participant. That key can sign
nothing else, and a token for one participant is refused by the others. It therefore
*owns* the reservations it makes, which is what the product service requires to commit or
release them, and holds the role the payment and shipping services require for refunds
and shipments.

Every call carries the saga's idempotency key or an id derived from the order, so a resent
command repeats the first call. Answers map onto saga events: a definite refusal (out of
stock, card declined, no carrier) is ``StepFailed``; "not there" during compensation is
``CompensationDone`` (nothing to undo); anything else — 5xx, timeouts, an open breaker,
"being made by another request" — raises, so the consumer retries and the deadline resends.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from services.core.auth import TokenService
from services.order.orchestrator import PAYMENT_EVENTS_REJECTED, ForeignPayment
from services.order.repository import RefusedPayment, SagaOrder
from services.order.saga import (
    Charge,
    Command,
    Compensation,
    CompensationDone,
    Mismatch,
    PaymentActionRequired,
    SagaEvent,
    Step,
    StepFailed,
    StepSucceeded,
    reservation_id,
)

log = logging.getLogger(__name__)

_SHIPMENT_NAMESPACE = uuid.UUID("0e0b8a53-5f4e-4d8f-9a51-7f4d3f3b2c11")

#: Until products carry shipping weights, each unit ships as this nominal parcel.
NOMINAL_PARCEL = {"weight_grams": 500, "length_mm": 300, "width_mm": 200, "height_mm": 100}


class HttpCaller(Protocol):
    """What is needed of a client: core ``ServiceClient`` and ``httpx.AsyncClient`` fit."""

    async def get(self, url: str, **kwargs: Any) -> httpx.Response: ...

    async def post(self, url: str, **kwargs: Any) -> httpx.Response: ...


class ParticipantUnavailable(RuntimeError):
    """The participant gave no usable answer; the command is tried again later."""


def shipment_id(order_id: str) -> uuid.UUID:
    return uuid.uuid5(_SHIPMENT_NAMESPACE, f"shipment:{order_id}")


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message") or body.get("code") or response.status_code)


def _code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("code")
        return code if isinstance(code, str) else None
    except (ValueError, AttributeError):
        return None


def _unavailable(what: str, response: httpx.Response) -> ParticipantUnavailable:
    return ParticipantUnavailable(f"{what}: HTTP {response.status_code} {_message(response)}")


def _charge_mismatch(order: SagaOrder, payment: dict[str, Any]) -> Mismatch | None:
    """What in the payment service's answer differs from the charge asked for: the
    order's total, in its currency, for this order, with an intent."""
    if payment.get("order_id") != str(order.id):
        return Mismatch.ORDER
    if not isinstance(payment.get("id"), str) or not isinstance(payment.get("intent_id"), str):
        return Mismatch.INTENT
    if payment.get("amount") != order.total or type(payment.get("amount")) is not int:
        return Mismatch.AMOUNT
    if payment.get("currency") != order.currency:
        return Mismatch.CURRENCY
    return None


def _refused(order: SagaOrder, payment: dict[str, Any], what: str,
             reason: Mismatch) -> RefusedPayment:
    return RefusedPayment(reason=reason, event_type=what, order_id=str(order.id),
                          payment_id=payment.get("id"), intent_id=payment.get("intent_id"),
                          amount=payment.get("amount"), currency=payment.get("currency"))


def _own_charge(order: SagaOrder, payment: dict[str, Any], what: str) -> Charge:
    """The answer as the saga's charge, or :class:`ForeignPayment` when it is not the
    charge asked for."""
    if (mismatch := _charge_mismatch(order, payment)) is not None:
        raise ForeignPayment(_refused(order, payment, f"{what} ({mismatch.value})",
                                      Mismatch.ANSWER))
    return Charge(payment_id=payment["id"], intent_id=payment["intent_id"],
                  amount=order.total, currency=order.currency)


class _AsService:
    """A participant's client whose every call carries the order service's identity token
    for that participant."""

    def __init__(self, caller: HttpCaller, audience: str,
                 token: Callable[[str], str]) -> None:
        self.caller = caller
        self.audience = audience
        self._token = token

    def _signed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        headers = dict(kwargs.get("headers") or {})
        headers["Authorization"] = f"Bearer {self._token(self.audience)}"
        return {**kwargs, "headers": headers}

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.caller.get(url, **self._signed(kwargs))

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.caller.post(url, **self._signed(kwargs))


class HttpParticipants:
    def __init__(self, tokens: TokenService, service_name: str, *, product: HttpCaller,
                 payment: HttpCaller, shipping: HttpCaller,
                 reservation_ttl_seconds: int = 1200) -> None:
        self.tokens = tokens
        self.subject = f"service:{service_name}"
        # Each participant's calls carry a token addressed to that participant.
        self.product = _AsService(product, "product", self._token)
        self.payment = _AsService(payment, "payment", self._token)
        self.shipping = _AsService(shipping, "shipping", self._token)
        self.reservation_ttl_seconds = reservation_ttl_seconds
        self._issued: dict[str, tuple[str, float]] = {}  # audience: token, when to renew

    def _token(self, audience: str) -> str:
        """The service's access token for ``audience``, reissued once half its lifetime
        has passed (every call signing a fresh one cost more than the call's own JSON)."""
        now = time.monotonic()
        issued = self._issued.get(audience)
        if issued is None or now >= issued[1]:
            token = self.tokens.issue_service(audience)
            issued = self._issued[audience] = (token.token, now + token.expires_in / 2)
        return issued[0]

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        """The call's own headers; the identity token is added per participant."""
        return {"Idempotency-Key": idempotency_key} if idempotency_key else {}

    async def perform(self, order: SagaOrder, command: Command) -> SagaEvent:
        match command.action:
            case Step.RESERVE_INVENTORY:
                return await self._reserve(order)
            case Step.COMMIT_INVENTORY:
                return await self._commit(order)
            case Compensation.RELEASE_INVENTORY:
                return await self._release(order)
            case Step.CHARGE_PAYMENT:
                return await self._charge(order, command)
            case Compensation.REFUND_PAYMENT:
                return await self._refund(order, command)
            case Step.CREATE_SHIPMENT:
                return await self._ship(order)
            case Compensation.CANCEL_SHIPMENT:
                return await self._cancel_shipment(order)
        raise AssertionError(f"unknown saga action {command.action!r}")

    # -- inventory ---------------------------------------------------------------------------

    async def _reserve(self, order: SagaOrder) -> SagaEvent:
        rid = reservation_id(str(order.id))
        response = await self.product.post("/inventory/reservations", headers=self._headers(),
                                           json={"id": str(rid),
                                                 "ttl_seconds": self.reservation_ttl_seconds,
                                                 "lines": [{"variant_id": line["variant_id"],
                                                            "quantity": line["quantity"]}
                                                           for line in order.lines]})
        if response.status_code in (200, 201):
            if response.json().get("status") == "active":
                return StepSucceeded(Step.RESERVE_INVENTORY, str(rid))
            # Released or expired already (we compensated before this retry): no stock held.
            return StepFailed(Step.RESERVE_INVENTORY, "the reservation is no longer active")
        if response.status_code == 422 or (response.status_code == 409 and _code(response)
                                           != "reservation_in_progress"):
            return StepFailed(Step.RESERVE_INVENTORY, _message(response))
        raise _unavailable("reserve inventory", response)

    async def _commit(self, order: SagaOrder) -> SagaEvent:
        rid = reservation_id(str(order.id))
        response = await self.product.post(f"/inventory/reservations/{rid}/commit",
                                           headers=self._headers())
        if response.status_code == 200:
            return StepSucceeded(Step.COMMIT_INVENTORY, str(rid))
        if response.status_code in (404, 409):
            return StepFailed(Step.COMMIT_INVENTORY, _message(response))
        raise _unavailable("commit inventory", response)

    async def _release(self, order: SagaOrder) -> SagaEvent:
        rid = reservation_id(str(order.id))
        response = await self.product.post(f"/inventory/reservations/{rid}/release",
                                           headers=self._headers())
        if response.status_code in (200, 404):
            return CompensationDone(Compensation.RELEASE_INVENTORY)
        if response.status_code == 409:
            # Committed (sold) or already gone: nothing more this compensation can do.
            log.warning("order %s: reservation not released: %s", order.id, _message(response))
            return CompensationDone(Compensation.RELEASE_INVENTORY)
        raise _unavailable("release inventory", response)

    # -- payment -----------------------------------------------------------------------------

    async def _charge(self, order: SagaOrder, command: Command) -> SagaEvent:
        """Charge the order's total for its shopper; the answer becomes the saga's own
        charge, which only it may settle or refund later. An answer about another order,
        amount or currency than asked for is refused (:class:`ForeignPayment`)."""
        response = await self.payment.post(
            "/payments", headers=self._headers(command.idempotency_key),
            json={"order_id": str(order.id), "amount": order.total,
                  "currency": order.currency, "payment_method": order.payment_method,
                  "owner": order.owner})
        if response.status_code == 422:
            return StepFailed(Step.CHARGE_PAYMENT, _message(response))
        if response.status_code not in (200, 201):
            raise _unavailable("charge", response)
        payment = response.json()
        if payment["status"] in ("declined", "canceled"):
            # Kept as the saga's charge when it is one (a decline may name no intent).
            declined = (_own_charge(order, payment, "charge answer")
                        if _charge_mismatch(order, payment) is None else None)
            return StepFailed(Step.CHARGE_PAYMENT, "payment declined: "
                              f"{payment.get('failure_message') or payment['status']}",
                              charge=declined)
        if payment["status"] not in ("succeeded", "requires_action"):
            raise ParticipantUnavailable(f"payment still {payment['status']}")
        charge = _own_charge(order, payment, "charge answer")
        if payment["status"] == "succeeded":
            return StepSucceeded(Step.CHARGE_PAYMENT, charge.payment_id, charge=charge)
        return PaymentActionRequired(charge.payment_id, charge=charge)

    async def _refund(self, order: SagaOrder, command: Command) -> SagaEvent:
        """Refund the saga's own charge and nothing else. When the charge's reply never
        arrived (no charge on record), the order's payments are looked up instead; only one
        that is the order's total in its currency is taken as the saga's (the payment
        service accepts no other charge for an order), anything else is left alone."""
        if command.charge is not None:
            found = await self.payment.get(f"/payments/{command.charge.payment_id}",
                                           headers=self._headers())
            if found.status_code == 404:
                return CompensationDone(Compensation.REFUND_PAYMENT)
            if found.status_code != 200:
                raise _unavailable("read payment", found)
            payments = [found.json()]
            if _own_charge(order, payments[0], "refund lookup") != command.charge:
                raise ForeignPayment(_refused(order, payments[0], "refund lookup",
                                              Mismatch.ANSWER))
        else:
            listed = await self.payment.get("/payments", headers=self._headers(),
                                            params={"order_id": str(order.id)})
            if listed.status_code != 200:
                raise _unavailable("list payments", listed)
            payments = []
            for payment in listed.json():
                if _charge_mismatch(order, payment) is None:
                    payments.append(payment)
                else:
                    log.warning("order %s: payment %s is not the order's charge; not "
                                "refunded", order.id, payment.get("id"))
                    PAYMENT_EVENTS_REJECTED.labels(reason=Mismatch.ANSWER).inc()
        for payment in payments:
            if payment["status"] not in ("succeeded", "partially_refunded"):
                continue
            left = int(payment["amount"]) - int(payment["refunded_amount"])
            response = await self.payment.post(
                f"/payments/{payment['id']}/refunds",
                json={"amount": left, "reason": "order cancelled"},
                headers=self._headers(f"{command.idempotency_key}-{payment['id']}"))
            if response.status_code not in (200, 201):
                raise _unavailable("refund", response)
            refund = response.json()
            if refund.get("payment_id") != payment["id"] or refund.get("amount") != left:
                raise ForeignPayment(RefusedPayment(
                    reason=Mismatch.ANSWER, event_type="refund answer",
                    order_id=str(order.id), payment_id=refund.get("payment_id"),
                    amount=refund.get("amount"), currency=payment.get("currency")))
        return CompensationDone(Compensation.REFUND_PAYMENT)

    # -- shipping ----------------------------------------------------------------------------

    async def _ship(self, order: SagaOrder) -> SagaEvent:
        units = sum(int(line["quantity"]) for line in order.lines)
        parcel = {**NOMINAL_PARCEL, "weight_grams": NOMINAL_PARCEL["weight_grams"] * units}
        response = await self.shipping.post("/shipments", headers=self._headers(), json={
            "id": str(shipment_id(str(order.id))), "order_id": str(order.id),
            "owner": order.owner, "address": order.shipping_address, "parcels": [parcel],
            "currency": order.currency})
        if response.status_code in (200, 201):
            return StepSucceeded(Step.CREATE_SHIPMENT, response.json()["tracking_number"])
        if response.status_code in (409, 422):
            return StepFailed(Step.CREATE_SHIPMENT, _message(response))
        raise _unavailable("create shipment", response)

    async def _cancel_shipment(self, order: SagaOrder) -> SagaEvent:
        response = await self.shipping.post(
            f"/shipments/{shipment_id(str(order.id))}/cancel", headers=self._headers())
        if response.status_code in (200, 404):
            return CompensationDone(Compensation.CANCEL_SHIPMENT)
        if response.status_code == 409:
            log.warning("order %s: shipment not cancelled: %s", order.id, _message(response))
            return CompensationDone(Compensation.CANCEL_SHIPMENT)
        raise _unavailable("cancel shipment", response)
