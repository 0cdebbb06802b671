"""Charging, refunding and applying Stripe's webhooks, with an audit entry for each.

Payments belong to the checkout: only the order saga's service identity charges, once per
order, for the shopper it names; the shopper reads their payment and completes its 3-D
Secure challenge; only services and admins refund.

A charge is written in two transactions around the provider call: first a *pending* row
claims the idempotency key (so two concurrent requests with one key make one payment row),
then the outcome. A crash between the two leaves a pending row; the next request with the
same key calls the provider again with the same idempotency key and gets the first answer
back, so the shopper is charged once however often the call is repeated.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.auth import Principal
from services.core.db import Database
from services.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unprocessable
from services.core.events.outbox import add_event
from services.core.metrics import counter
from services.payment import events, repository
from services.payment.models import AuditEntry, Payment, Refund, SavedPaymentMethod
from services.payment.providers import ChargeResult, ChargeStatus, PaymentGateway
from services.payment.schemas import ChargeIn, RefundIn
from services.payment.settings import PaymentSettings

log = logging.getLogger(__name__)

PAYMENTS_TOTAL = counter("payments_total", "Payment outcomes", ["status"])
REFUNDS_TOTAL = counter("refunds_total", "Refunds issued", ["kind"])

_RISK_ORDER = {"normal": 0, "elevated": 1, "highest": 2}
#: Statuses a webhook may not move a payment out of (the later news already arrived).
_SETTLED = {"succeeded", "partially_refunded", "refunded", "canceled"}

PRIVILEGED_ROLES = frozenset({"admin", "service"})


def is_privileged(principal: Principal) -> bool:
    """Admins and other services (the order saga holds a token with the ``service`` role)."""
    return bool(principal.roles & PRIVILEGED_ROLES)


class PaymentService:
    def __init__(self, database: Database, gateway: PaymentGateway,
                 settings: PaymentSettings) -> None:
        self.database = database
        self.gateway = gateway
        self.settings = settings

    # -- charges -----------------------------------------------------------------------------

    async def charge(self, principal: Principal, body: ChargeIn,
                     idempotency_key: str) -> tuple[Payment, str | None, bool]:
        """Charge once per key; returns the payment, a client secret when the shopper must
        authenticate, and whether this call created the payment.

        Only the order saga charges (the route requires the ``service`` role), for the
        shopper named in ``body.owner``; and an order is charged once: a charge under
        another key for an order that already has a payment which is not declined or
        canceled is refused, so a second payment can never be made for a paid order."""
        if not principal.has_role("service"):
            raise Forbidden("payments are made by the checkout, not by shoppers",
                            code="missing_role")
        owner = body.owner or principal.user_id
        # Keys are per caller, so one caller's key can never reach another's payment.
        key = f"{principal.user_id}:{idempotency_key}"
        async with self.database.session() as session, session.begin():
            await repository.lock_order(session, body.order_id)
            other = await repository.live_payment_for_order(session, body.order_id,
                                                            other_than_key=key)
            if other is not None:
                raise Conflict("this order already has a payment; it is charged once",
                               code="order_already_charged")
            payment, created = await repository.claim_payment(session, {
                "idempotency_key": key, "order_id": body.order_id,
                "owner": owner, "amount": body.amount, "currency": body.currency})
            if (payment.order_id, payment.amount, payment.currency, payment.owner) != (
                    body.order_id, body.amount, body.currency, owner):
                raise Unprocessable("this Idempotency-Key was used for another payment",
                                    code="idempotency_key_reused")
            if created:
                await repository.audit(session, payment.id, "charge_requested",
                                       principal.user_id, {"order_id": body.order_id,
                                                           "owner": owner,
                                                           "amount": body.amount,
                                                           "currency": body.currency})
            if payment.status not in ("pending", "requires_action"):
                return payment, None, created
            # Read in the claim's transaction: one round trip less on every checkout.
            customer = await repository.customer_of_saved(session, owner,
                                                          body.payment_method)
        result = await self.gateway.charge(
            amount=body.amount, currency=body.currency, payment_method=body.payment_method,
            idempotency_key=f"charge-{payment.id}", customer=customer,
            metadata={"order_id": body.order_id, "payment_id": str(payment.id)})
        async with self.database.session() as session, session.begin():
            locked = await repository.payment_by_key(session, key, for_update=True)
            assert locked is not None
            payment = locked
            if payment.status in ("pending", "requires_action"):
                await self._record_charge(session, payment, result, principal.user_id)
        return payment, result.client_secret, created

    async def complete_authentication(self, principal: Principal,
                                      payment_id: uuid.UUID) -> Payment:
        """The shopper has done the 3-D Secure challenge of their payment: ask the provider
        for the intent's outcome and record it (a success is announced on the bus, where
        the order saga, finding its own charge, moves the order on). With Stripe the
        challenge happens in the browser (Stripe.js with the client secret) and this reads
        the result; the sandbox, having no browser, completes it as a shopper passing it
        would. Only the payment's shopper may; a repeat after success returns the payment."""
        async with self.database.session() as session:
            payment = await repository.payment_by_id(session, payment_id)
        if payment is None or payment.owner != principal.user_id:
            raise NotFound("no such payment", code="payment_not_found")
        if payment.status == "succeeded":
            return payment
        if payment.status != "requires_action" or not payment.intent_id:
            raise Conflict(f"a {payment.status} payment is not waiting for authentication",
                           code="payment_not_awaiting_authentication")
        result = await self.gateway.complete_action(
            intent_id=payment.intent_id, idempotency_key=f"authenticate-{payment.id}")
        async with self.database.session() as session, session.begin():
            payment = await repository.payment_by_id(session, payment_id, for_update=True)
            assert payment is not None
            if payment.status in ("pending", "requires_action"):
                await self._record_charge(session, payment, result, principal.user_id)
        return payment

    # -- saved payment methods ---------------------------------------------------------------

    async def save_method(self, principal: Principal,
                          payment_method: str) -> SavedPaymentMethod:
        """Attach a tokenized method to the shopper's customer (made on first use)."""
        owner = principal.user_id
        async with self.database.session() as session:
            customer = await repository.customer(session, owner)
        if customer is None:
            provider_id = await self.gateway.create_customer(
                email=None, idempotency_key=f"customer-{owner}")
            async with self.database.session() as session, session.begin():
                customer = await repository.claim_customer(session, owner, provider_id)
        card = await self.gateway.attach(customer=customer.provider_customer_id,
                                         payment_method=payment_method,
                                         idempotency_key=f"attach-{owner}-{payment_method}")
        async with self.database.session() as session, session.begin():
            saved = await repository.claim_saved_method(session, card.id, owner,
                                                        brand=card.brand, last4=card.last4)
            if saved.owner != owner:
                raise NotFound("no such payment method", code="payment_method_not_found")
            await repository.audit(session, None, "payment_method_saved", owner,
                                   {"payment_method": card.id, "brand": card.brand,
                                    "last4": card.last4})
        return saved

    async def saved_methods(self, principal: Principal) -> list[SavedPaymentMethod]:
        async with self.database.session() as session:
            return await repository.saved_methods(session, principal.user_id)

    async def remove_method(self, principal: Principal, payment_method: str) -> None:
        async with self.database.session() as session:
            saved = await repository.saved_method(session, payment_method)
        if saved is None or saved.owner != principal.user_id:
            raise NotFound("no such payment method", code="payment_method_not_found")
        await self.gateway.detach(payment_method=payment_method,
                                  idempotency_key=f"detach-{payment_method}")
        async with self.database.session() as session, session.begin():
            await repository.delete_saved_method(session, payment_method)
            await repository.audit(session, None, "payment_method_removed",
                                   principal.user_id, {"payment_method": payment_method})

    async def _record_charge(self, session: AsyncSession, payment: Payment,
                             result: ChargeResult, actor: str) -> None:
        before = payment.status
        payment.status = result.status.value
        payment.intent_id = result.intent_id or payment.intent_id
        payment.client_secret = (result.client_secret
                                 if result.status is ChargeStatus.REQUIRES_ACTION else None)
        payment.card_brand = result.card_brand
        payment.card_last4 = result.card_last4
        payment.decline_code = result.decline_code
        payment.failure_message = result.failure_message
        payment.risk_level = result.risk_level
        payment.needs_review = (result.status is ChargeStatus.SUCCEEDED
                                and self._needs_review(result.risk_level))
        await repository.touch(session, payment)
        await repository.audit(session, payment.id, f"charge_{result.status.value}", actor, {
            "intent_id": result.intent_id, "decline_code": result.decline_code,
            "risk_level": result.risk_level, "card_brand": result.card_brand,
            "card_last4": result.card_last4})
        if payment.status != before:
            PAYMENTS_TOTAL.labels(status=payment.status).inc()
            await self._announce(session, payment)

    def _needs_review(self, risk_level: str | None) -> bool:
        """The fraud hook: Stripe's risk level at or above the configured threshold."""
        if risk_level is None:
            return False
        threshold = _RISK_ORDER[self.settings.fraud_review_risk_level]
        return _RISK_ORDER.get(risk_level, 0) >= threshold

    async def _announce(self, session: AsyncSession, payment: Payment) -> None:
        event = events.status_event(payment, source=self.settings.service_name)
        if event is not None:
            await add_event(session, event)

    async def get(self, principal: Principal, payment_id: uuid.UUID) -> Payment:
        async with self.database.session() as session:
            payment = await repository.payment_by_id(session, payment_id)
        if payment is None or not (payment.owner == principal.user_id
                                   or is_privileged(principal)):
            # The same answer for "not yours" and "absent": ids are not an oracle.
            raise NotFound("no such payment", code="payment_not_found")
        return payment

    async def for_order(self, principal: Principal, order_id: str) -> list[Payment]:
        """Every payment for an order — what a compensating refund looks for when the
        charge's reply never arrived — for admins and services; a shopper sees their own
        (how they find the payment waiting for their 3-D Secure)."""
        async with self.database.session() as session:
            payments = await repository.payments_for_order(session, order_id)
        if is_privileged(principal):
            return payments
        return [p for p in payments if p.owner == principal.user_id]

    # -- refunds -----------------------------------------------------------------------------

    async def refund(self, principal: Principal, payment_id: uuid.UUID, body: RefundIn,
                     idempotency_key: str) -> tuple[Refund, bool]:
        """Refund all or part of a payment, once per key. The payment row stays locked
        across the provider call so two refunds can never together exceed the charge."""
        if not is_privileged(principal):
            raise Forbidden("refunds need the 'admin' or 'service' role", code="missing_role")
        key = f"{payment_id}:{idempotency_key}"
        async with self.database.session() as session, session.begin():
            existing = await repository.refund_by_key(session, key)
            if existing is not None:
                return existing, False
            payment = await repository.payment_by_id(session, payment_id, for_update=True)
            if payment is None:
                raise NotFound("no such payment", code="payment_not_found")
            if payment.status not in ("succeeded", "partially_refunded") or not payment.intent_id:
                raise Unprocessable(f"a {payment.status} payment cannot be refunded",
                                    code="payment_not_refundable")
            left = payment.amount - payment.refunded_amount
            amount = left if body.amount is None else body.amount
            if amount > left:
                raise Unprocessable(f"at most {left} can still be refunded",
                                    code="refund_too_large")
            result = await self.gateway.refund(
                intent_id=payment.intent_id, amount=amount,
                idempotency_key=f"refund-{payment.id}-{idempotency_key}")
            refund = Refund(payment_id=payment.id, idempotency_key=key,
                            provider_refund_id=result.refund_id, amount=amount,
                            status=result.status, reason=body.reason)
            repository.add_refund(session, refund)
            payment.refunded_amount += amount
            payment.status = ("refunded" if payment.refunded_amount == payment.amount
                              else "partially_refunded")
            await repository.touch(session, payment)
            await repository.audit(session, payment.id, "refund", principal.user_id, {
                "amount": amount, "provider_refund_id": result.refund_id,
                "reason": body.reason, "refunded_total": payment.refunded_amount})
            await self._announce(session, payment)
            REFUNDS_TOTAL.labels(kind="full" if amount == payment.amount else "partial").inc()
            await repository.reload(session, refund)
        return refund, True

    async def audit_trail(self, payment_id: uuid.UUID) -> list[AuditEntry]:
        async with self.database.session() as session:
            return await repository.audit_trail(session, payment_id)

    # -- webhooks ----------------------------------------------------------------------------

    async def apply_webhook(self, payload: bytes, signature: str | None) -> str:
        """Verify Stripe's signature, then apply the event once. Anything unsigned or
        signed with another secret is refused before it touches the database."""
        secret = self.settings.stripe_webhook_secret
        if secret is None or not signature:
            raise InvalidRequest("missing or unverifiable Stripe-Signature",
                                 code="invalid_signature")
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8"), signature, secret.get_secret_value(),
                tolerance=self.settings.webhook_tolerance_seconds)
            data = json.loads(payload)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            raise InvalidRequest("the webhook signature does not verify",
                                 code="invalid_signature") from exc
        # Signed is not the same as well-formed: check the shape before trusting it.
        if not isinstance(data, dict):
            data = {}
        body = data.get("data")
        obj: Any = body.get("object") if isinstance(body, dict) else None
        event_id, event_type = data.get("id"), data.get("type")
        if not (isinstance(event_id, str) and isinstance(event_type, str)
                and isinstance(obj, dict)):
            raise InvalidRequest("not a Stripe event", code="invalid_event")
        async with self.database.session() as session, session.begin():
            if not await repository.first_delivery(session, event_id, event_type):
                return "duplicate"
            applied = await self._apply_event(session, event_type, obj)
            await repository.audit(session, applied, "webhook", "stripe",
                                   {"event_id": event_id, "type": event_type})
        return "applied" if applied else "ignored"

    async def _apply_event(self, session: AsyncSession, event_type: str,
                           obj: Any) -> uuid.UUID | None:
        intent_id = obj.get("payment_intent") if event_type.startswith("charge.") else obj.get(
            "id")
        if not isinstance(intent_id, str):
            return None
        payment = await repository.payment_by_intent(session, intent_id)
        if payment is None:
            return None
        before = payment.status
        match event_type:
            case "payment_intent.succeeded" if before not in _SETTLED:
                payment.status = "succeeded"
            case "payment_intent.payment_failed" if before not in _SETTLED:
                error = obj.get("last_payment_error") or {}
                payment.status = "declined"
                payment.decline_code = error.get("decline_code") or error.get("code")
                payment.failure_message = error.get("message")
            case "payment_intent.canceled" if before not in _SETTLED - {"canceled"}:
                payment.status = "canceled"
            case "payment_intent.requires_action" if before == "pending":
                payment.status = "requires_action"
                secret = obj.get("client_secret")
                payment.client_secret = secret if isinstance(secret, str) else None
            case "charge.refunded":
                refunded = int(obj.get("amount_refunded") or 0)
                if refunded > payment.refunded_amount:
                    payment.refunded_amount = min(refunded, payment.amount)
                    payment.status = ("refunded" if payment.refunded_amount == payment.amount
                                      else "partially_refunded")
        if payment.status != before:
            if payment.status != "requires_action":
                payment.client_secret = None
            await repository.touch(session, payment)
            PAYMENTS_TOTAL.labels(status=payment.status).inc()
            await self._announce(session, payment)
        return payment.id
