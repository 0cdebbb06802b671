"""The payment service's events, built in :mod:`services.payment.events`, are the rows the
core's Publisher wrote (before it went): same type, source, key, topic and payload, key order
included."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from services.core.events.outbox import outbox_row
from services.payment import events
from services.payment.models import Payment
from tests.services.support import comparable, published_as_the_core_did


def payment(status: str) -> Payment:
    return Payment(id=uuid.uuid4(), idempotency_key="k", order_id=str(uuid.uuid4()),
                   owner="user-1", amount=16699, currency="EUR", status=status,
                   intent_id="pi_1", refunded_amount=0, decline_code=None,
                   failure_message=None, needs_review=False, card_brand="visa",
                   card_last4="4242")


def published_before(p: Payment, event_type: str) -> list[dict[str, Any]]:
    return comparable(published_as_the_core_did("payment", event_type, p.order_id, {
        "payment_id": str(p.id), "order_id": p.order_id, "intent_id": p.intent_id,
        "owner": p.owner, "status": p.status, "amount": p.amount, "currency": p.currency,
        "refunded_amount": p.refunded_amount, "decline_code": p.decline_code,
        "failure_message": p.failure_message, "needs_review": p.needs_review,
        "card_brand": p.card_brand, "card_last4": p.card_last4}))


@pytest.mark.parametrize(("status", "event_type"), [
    ("succeeded", "payment.succeeded"), ("declined", "payment.failed"),
    ("requires_action", "payment.action_required"), ("canceled", "payment.canceled"),
    ("partially_refunded", "payment.refunded"), ("refunded", "payment.refunded")])
def test_each_status_is_announced_as_the_publisher_announced_it(status: str,
                                                                event_type: str) -> None:
    p = payment(status)
    event = events.status_event(p, source="payment")
    assert event is not None
    written = comparable(outbox_row(event))

    assert json.dumps(written) == json.dumps(published_before(p, event_type))
    assert written[0]["topic"] == "payment.events"
    assert written[0]["event_key"] == p.order_id


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_a_payment_on_its_way_is_not_announced(status: str) -> None:
    assert events.status_event(payment(status), source="payment") is None
