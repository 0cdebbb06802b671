"""A refund's reason is free text an admin types: a card number pasted into it is masked
before it can reach the payments table or the audit log."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.payment.schemas import RefundIn


def test_a_card_number_in_a_refund_reason_is_masked() -> None:
    refund = RefundIn(reason="customer read out 4242-4242-4242-4242 on the phone")
    assert refund.reason == "customer read out [card number] on the phone"


def test_a_refund_reason_keeps_its_length_limit() -> None:
    with pytest.raises(ValidationError, match="500"):
        RefundIn(reason="x" * 501)
