"""Payment routes: charge, read, complete 3-D Secure, refund, audit trail and Stripe's
webhook.

Payments belong to the checkout saga: only the ``service`` role charges (the order saga
calls with a service token, naming the shopper). Shoppers read their own payments and
complete the 3-D Secure challenge of their own; refunds need the ``admin`` or ``service``
role, audit trails ``admin``. The webhook is authenticated by Stripe's signature, not by a
user.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from services.core.auth import AdminUser, CurrentUser, Principal, require_role
from services.core.state import AppState
from services.payment.models import Payment
from services.payment.schemas import (
    AuditEntryOut,
    ChargeIn,
    PaymentOut,
    RefundIn,
    RefundOut,
    SavedPaymentMethodOut,
    SavePaymentMethodIn,
)
from services.payment.service import PaymentService

router = APIRouter()


def shown(payment: Payment, reader: Principal) -> PaymentOut:
    """A payment as ``reader`` may see it: its client secret only to its shopper, and only
    while it waits for their 3-D Secure (Stripe.js needs it for the challenge)."""
    out = PaymentOut.model_validate(payment)
    mine = payment.status == "requires_action" and payment.owner == reader.user_id
    out.client_secret = payment.client_secret if mine else None
    return out


#: Built by the app's lifespan (see :mod:`.app`).
PAYMENTS = AppState[PaymentService]("payments")
Payments = Annotated[PaymentService, Depends(PAYMENTS)]
#: The order saga (or another service): the only caller that may charge.
ServiceCaller = Annotated[Principal, Depends(require_role("service"))]
IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$",
    description="Chosen by the client per logical operation; a repeat returns the first "
    "result instead of charging or refunding again.")]


@router.post("/payments", status_code=status.HTTP_201_CREATED, tags=["payments"],
             summary="Charge an order once, per Idempotency-Key (the checkout's service "
             "identity only)",
             responses={200: {"model": PaymentOut, "description": "A retry: the payment "
                              "made before"}})
async def charge(body: ChargeIn, idempotency_key: IdempotencyKey, payments: Payments,
                 user: ServiceCaller, response: Response) -> PaymentOut:
    payment, client_secret, created = await payments.charge(user, body, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    out = PaymentOut.model_validate(payment)
    out.client_secret = client_secret if payment.status == "requires_action" else None
    return out


@router.get("/payments", tags=["payments"],
            summary="Payments for one order, oldest first (all of them for admin or "
            "service, a shopper's own for a shopper)")
async def payments_for_order(
        payments: Payments, user: CurrentUser,
        order_id: Annotated[str, Query(min_length=1, max_length=100)]) -> list[PaymentOut]:
    return [shown(p, user) for p in await payments.for_order(user, order_id)]


@router.get("/payments/{payment_id}", tags=["payments"], summary="A payment (owner or admin)")
async def get_payment(payment_id: uuid.UUID, payments: Payments,
                      user: CurrentUser) -> PaymentOut:
    return shown(await payments.get(user, payment_id), user)


@router.post("/payments/{payment_id}/authentication", tags=["payments"],
             summary="The shopper completed 3-D Secure: record the outcome (their own "
             "payment only)")
async def complete_authentication(payment_id: uuid.UUID, payments: Payments,
                                  user: CurrentUser) -> PaymentOut:
    return shown(await payments.complete_authentication(user, payment_id), user)


@router.post("/payments/{payment_id}/refunds", status_code=status.HTTP_201_CREATED,
             tags=["payments"], summary="Refund all or part of a payment (admin or service)",
             responses={200: {"model": RefundOut, "description": "A retry: the refund made "
                              "before"}})
async def refund(payment_id: uuid.UUID, body: RefundIn, idempotency_key: IdempotencyKey,
                 payments: Payments, user: CurrentUser, response: Response) -> RefundOut:
    made, created = await payments.refund(user, payment_id, body, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return RefundOut.model_validate(made)


@router.get("/payments/{payment_id}/audit", tags=["payments"],
            summary="Every action taken on a payment, oldest first (admin)")
async def audit_trail(payment_id: uuid.UUID, payments: Payments,
                      _: AdminUser) -> list[AuditEntryOut]:
    return [AuditEntryOut.model_validate(e) for e in await payments.audit_trail(payment_id)]


@router.post("/payment-methods", status_code=status.HTTP_201_CREATED,
             tags=["payment methods"], summary="Save a tokenized card for later checkouts")
async def save_payment_method(body: SavePaymentMethodIn, payments: Payments,
                              user: CurrentUser) -> SavedPaymentMethodOut:
    return SavedPaymentMethodOut.model_validate(
        await payments.save_method(user, body.payment_method))


@router.get("/payment-methods", tags=["payment methods"],
            summary="The caller's saved cards (brand and last four only)")
async def saved_payment_methods(payments: Payments,
                                user: CurrentUser) -> list[SavedPaymentMethodOut]:
    return [SavedPaymentMethodOut.model_validate(m) for m in await payments.saved_methods(user)]


@router.delete("/payment-methods/{payment_method}", status_code=status.HTTP_204_NO_CONTENT,
               tags=["payment methods"], summary="Forget a saved card")
async def remove_payment_method(payment_method: str, payments: Payments,
                                user: CurrentUser) -> Response:
    await payments.remove_method(user, payment_method)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/webhooks/stripe", tags=["webhooks"],
             summary="Stripe's events; refused with 400 unless the signature verifies")
async def stripe_webhook(request: Request, payments: Payments,
                         stripe_signature: Annotated[str | None, Header(
                             alias="Stripe-Signature")] = None) -> dict[str, str]:
    outcome = await payments.apply_webhook(await request.body(), stripe_signature)
    return {"outcome": outcome}
