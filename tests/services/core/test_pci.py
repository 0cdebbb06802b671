"""Card numbers never get in where a payment method id belongs, and the finder that the
database and log scans use finds them in the shapes people type."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from services.core.pci import PaymentMethodId, find_pans, luhn_valid


class Checkout(BaseModel):
    payment_method: PaymentMethodId


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_card_chargeDeclined",
                                   "pm_1PgKqK2eZvKYlo2C0rX7a9Bd", "pm_12345678"])
def test_payment_method_tokens_are_accepted(token: str) -> None:
    assert Checkout(payment_method=token).payment_method == token


@pytest.mark.parametrize("value", ["pm_4242424242424242", "pm_card_5555555555554444",
                                   "pm_378282246310005_x"])
def test_a_card_number_dressed_as_a_token_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="looks like a card number"):
        Checkout(payment_method=value)


def test_a_bare_card_number_is_refused_by_shape() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        Checkout(payment_method="4242424242424242")


@pytest.mark.parametrize(("text", "found"), [
    ("card 4242 4242 4242 4242 ok", ["4242424242424242"]),
    ("amex 3782-822463-10005", []),  # Amex's own grouping is not four-by-four
    ("amex 378282246310005", ["378282246310005"]),
    ("order 4242424242424241", []),  # fails Luhn
    ("id a4242424242424242", []),  # inside a longer token
])
def test_card_numbers_are_found_in_text(text: str, found: list[str]) -> None:
    assert find_pans(text) == found


def test_luhn() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
