"""Card numbers (PANs): finding them in text the way a PCI DSS data-discovery scan does, and
keeping them out of every input that names a payment method.

The services take tokenized payment methods only (``pm_...`` from Stripe.js). A shape check
alone lets ``pm_4242424242424242`` through — a card number typed where a token belongs —
and it would be stored and logged; :data:`PaymentMethodId` refuses it. The same finder is
what the tests scan databases and logs with.

A candidate is 13 to 19 digits, contiguous or in groups of four split by one space or dash,
that passes the Luhn check and starts like a card scheme's number (Visa, Mastercard, Amex,
Discover, JCB, Diners, UnionPay, Maestro). The digits must stand alone — not inside a longer
alphanumeric token such as a hex id — which keeps random hex (request ids, tracking numbers)
from tripping the scan, at the cost of missing a PAN glued to letters on both sides.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7})(?![0-9A-Za-z])")

_SCHEME_PREFIX = re.compile(
    r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|64[4-9]|35|30[0-5]|36|38|62|50|5[6-8]|6[37])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def find_pans(text: str) -> list[str]:
    """Every card number in ``text``, digits only."""
    found = []
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and _SCHEME_PREFIX.match(digits) and luhn_valid(digits):
            found.append(digits)
    return found


def _no_card_number(value: str) -> str:
    if find_pans(value):
        raise ValueError("looks like a card number: send the payment method id from "
                         "Stripe.js (pm_...), never card data")
    return value


PaymentMethodId = Annotated[
    str,
    Field(min_length=4, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$",
          description="A Stripe payment method id from Stripe.js; never a card number."),
    AfterValidator(_no_card_number),
]
