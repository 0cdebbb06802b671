"""Card numbers (PANs): finding them in text the way a PCI DSS data-discovery scan does, and
keeping them out of everything the platform stores or logs.

The services take tokenized payment methods only (``pm_...`` from Stripe.js). A shape check
alone lets ``pm_4242424242424242`` through — a card number typed where a token belongs —
and it would be stored and logged; :data:`PaymentMethodId` refuses it. Shoppers also type
card numbers where no card belongs: into an address line, a name, a review, a search box.
Every free-text field of every request model is one of two types, so the choice is made
once per field and the check itself exists once:

* :data:`NoCardNumber` refuses (422 ``card_number_in_text``) — names, address lines, postal
  codes: a card number is never legitimate there, the text goes on a parcel label and into
  several services' tables, and refusing lets the shopper see and fix the mistake;
* :data:`FreeText` masks the number as ``[card number]`` — reviews, reasons, notes, search
  queries: text read by others or only counted, where refusing a whole review (or a search)
  for one pasted number helps nobody and the rest of the text is worth keeping.

Logs are redacted with :func:`mask_card_numbers` at the formatter (:mod:`services.core.logging`),
so a number in a URL path, a query string or an error message is not written either.

A candidate is a run of 13 to 19 digits, with at most one separator between two digits —
a space or dash as typed, or ``+``/``%20``/``%2D`` as a URL encodes them — that passes the
Luhn check and starts like a card scheme's number (Visa, Mastercard, Amex, Discover, JCB,
Diners, UnionPay, Maestro). Groups may be of any size (Amex prints 4-6-5). The run must
stand alone — not inside a longer alphanumeric token such as a hex id, and not part of a
UUID (whose dash-separated groups can be all digits) — which keeps random ids from tripping
the scan, at the cost of missing a PAN glued to letters on both sides.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

#: The error type (and, in the error body, the code) of a refused card number.
CARD_NUMBER_IN_TEXT = "card_number_in_text"
#: What a masked card number reads as; never longer than the shortest card number, so
#: masking never makes a text longer than the limit it was checked against.
MASK = "[card number]"

_SEPARATOR = r"(?:[ +-]|%20|%2[dD])"
_RUN = re.compile(
    r"\d"  # first, so the search skips straight to digits; the checks look behind it:
    # it starts a token (a percent escape such as %20 ends the one before, but its own hex
    # digits start nothing) ...
    r"(?:(?<![0-9A-Za-z]\d)|(?<=%[0-9A-Fa-f]{2}\d))(?<!%\d)(?<!%[0-9A-Fa-f]\d)"
    # ... and is not the tail of a longer run
    r"(?<!\d[ +-]\d)(?<!\d%20\d)(?<!\d%2[dD]\d)"
    # digits, at most one separator between two; possessive, so a run glued to letters is
    # dropped whole instead of being cut back to a shorter run that happens to pass
    r"(?:" + _SEPARATOR + r"?\d)*+"
    r"(?![0-9A-Za-z])", re.ASCII)
#: What any candidate's text is made of, at least 13 characters long: a quick first look,
#: so a log line (every line is scanned) without one costs one cheap search.
_MAYBE = re.compile(r"[0-9][0-9 +%dD-]{11,}[0-9]")
# The digit groups of a run; a percent escape's own digits (%20) are not among them.
_GROUP = re.compile(r"(?<!%)(?<!%[0-9A-Fa-f])\d+", re.ASCII)
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")

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


def _is_card_number(digits: str) -> bool:
    return (13 <= len(digits) <= 19 and _SCHEME_PREFIX.match(digits) is not None
            and luhn_valid(digits))


def _in_run(run: re.Match[str]) -> list[tuple[int, int, str]]:
    """The card numbers in one run: the whole run, or else the longest stretches of whole
    groups that pass, left to right ("4242 4242 4242 4242 12/27" holds one; so does an
    access line's "GET /orders/4242 4242 4242 4242 404")."""
    groups = [(m.start() + run.start(), m.end() + run.start(), m.group())
              for m in _GROUP.finditer(run.group())]
    found, first = [], 0
    while first < len(groups):
        for last in range(len(groups) - 1, first - 1, -1):
            digits = "".join(group for _, _, group in groups[first:last + 1])
            if len(digits) <= 19 and _is_card_number(digits):
                found.append((groups[first][0], groups[last][1], digits))
                first = last
                break
        first += 1
    return found


def _card_numbers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, digits) of every card number in ``text``."""
    found: list[tuple[int, int, str]] = []
    if _MAYBE.search(text) is None:
        return found
    uuids: list[tuple[int, int]] | None = None
    for run in _RUN.finditer(text):
        if run.end() - run.start() < 13:
            continue
        for start, end, digits in _in_run(run):
            if uuids is None:  # only looked for once a number has passed, which is rare
                uuids = [match.span() for match in _UUID.finditer(text)]
            if not any(start < u_end and u_start < end for u_start, u_end in uuids):
                found.append((start, end, digits))
    return found


def find_pans(text: str) -> list[str]:
    """Every card number in ``text``, digits only."""
    return [digits for _, _, digits in _card_numbers(text)]


def mask_card_numbers(text: str) -> str:
    """``text`` with every card number replaced by :data:`MASK`."""
    found = _card_numbers(text)
    if not found:
        return text
    parts, last = [], 0
    for start, end, _ in found:
        parts += [text[last:start], MASK]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def refuse_card_numbers(value: str) -> str:
    """``value`` unchanged; a card number in it is a validation error of type
    :data:`CARD_NUMBER_IN_TEXT`, which the error handler reports as the response's code."""
    if find_pans(value):
        raise PydanticCustomError(
            CARD_NUMBER_IN_TEXT,
            "this looks like a card number, which is never stored here; remove it (card "
            "details go only into the payment form)")
    return value


#: The checks as ``Annotated`` metadata. Put them after the field's limits in the same
#: ``Annotated`` — ``Annotated[str, Field(max_length=200), REFUSE_CARD_NUMBERS] | None`` —
#: so the limits are checked as usual first: pydantic cannot carry a limit given outside
#: (``NoCardNumber | None = Field(max_length=200)``) past a validator, and reports it as
#: a vaguer error after validation.
REFUSE_CARD_NUMBERS = AfterValidator(refuse_card_numbers)
MASK_CARD_NUMBERS = AfterValidator(mask_card_numbers)

#: Text where a card number is never legitimate: refused with ``card_number_in_text``.
#: Limits go in ``Field(...)`` (``name: NoCardNumber = Field(max_length=200)``).
NoCardNumber = Annotated[str, REFUSE_CARD_NUMBERS]
#: Text a shopper writes freely (reviews, reasons, searches): card numbers are masked.
FreeText = Annotated[str, MASK_CARD_NUMBERS]


def _no_card_number_in_token(value: str) -> str:
    if find_pans(value):
        raise PydanticCustomError(
            CARD_NUMBER_IN_TEXT, "looks like a card number: send the payment method id from "
            "Stripe.js (pm_...), never card data")
    return value


PaymentMethodId = Annotated[
    str,
    Field(min_length=4, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$",
          description="A Stripe payment method id from Stripe.js; never a card number."),
    AfterValidator(_no_card_number_in_token),
]
