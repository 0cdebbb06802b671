"""Card numbers never get in where a payment method id belongs, free text refuses or masks
them, log lines never carry them, and the finder that the database and log scans use finds
them in the shapes people type and URLs encode."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError

from services.core.app import create_service_app
from services.core.logging import (
    BatchingStreamHandler,
    JsonFormatter,
    PlainFormatter,
    access_log,
    log_access,
)
from services.core.pci import (
    CARD_NUMBER_IN_TEXT,
    MASK,
    FreeText,
    NoCardNumber,
    PaymentMethodId,
    find_pans,
    luhn_valid,
    mask_card_numbers,
)
from tests.services.support import running

from .conftest import make_settings


class Checkout(BaseModel):
    payment_method: PaymentMethodId


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_card_chargeDeclined",
                                   "pm_1PgKqK2eZvKYlo2C0rX7a9Bd", "pm_12345678"])
def test_payment_method_tokens_are_accepted(token: str) -> None:
    assert Checkout(payment_method=token).payment_method == token


@pytest.mark.parametrize("value", ["pm_4242424242424242", "pm_card_5555555555554444",
                                   "pm_378282246310005_x"])
def test_a_card_number_dressed_as_a_token_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="looks like a card number") as refused:
        Checkout(payment_method=value)
    assert refused.value.errors()[0]["type"] == CARD_NUMBER_IN_TEXT


def test_a_bare_card_number_is_refused_by_shape() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        Checkout(payment_method="4242424242424242")


@pytest.mark.parametrize(("text", "found"), [
    ("card 4242 4242 4242 4242 ok", ["4242424242424242"]),
    ("amex 3782-822463-10005", ["378282246310005"]),  # Amex prints 4-6-5
    ("amex 378282246310005", ["378282246310005"]),
    ("order 4242424242424241", []),  # fails Luhn
    ("id a4242424242424242", []),  # inside a longer token
    ("4242424242424242abc", []),
    ("tracking 9999999999999995", []),  # passes Luhn, no card scheme starts with 9
    ("two: 4111111111111111 and 5555-5555-5555-4444", ["4111111111111111",
                                                       "5555555555554444"]),
    # the number is in the run, with more digits after it
    ("4242 4242 4242 4242 12/27", ["4242424242424242"]),
    ("GET /orders/4242 4242 4242 4242 404", ["4242424242424242"]),
    ("12 4242424242424242", ["4242424242424242"]),
    # as URLs encode them
    ("GET /search?q=visa+4242+4242+4242+4242 HTTP/1.1", ["4242424242424242"]),
    ("/search?q=visa%204242%204242%204242%204242&page=1", ["4242424242424242"]),
    ("/x?a=%204242424242424242", ["4242424242424242"]),
    ("/x?a=%2D4242%2D4242%2D4242%2D4242", ["4242424242424242"]),
    # UUIDs' groups can be all digits: not card numbers
    ("order 42424242-4242-4242-a242-123456789012", []),
    ("order 12345678-4242-4242-4242-424242424242", []),
    ('{"ts":"2026-11-24T10:00:00.123+00:00","duration_ms":1732442205123}', []),
])
def test_card_numbers_are_found_in_text(text: str, found: list[str]) -> None:
    assert find_pans(text) == found


def test_masking_replaces_each_number_and_keeps_the_rest() -> None:
    assert mask_card_numbers("paid with 4242 4242 4242 4242, then 5555555555554444.") == \
        f"paid with {MASK}, then {MASK}."
    assert mask_card_numbers("no card here: 2026-11-24, +44 20 7946 0958") == \
        "no card here: 2026-11-24, +44 20 7946 0958"
    # never longer than what it replaces, so a text within its limit stays within it
    assert len(MASK) <= 13


class Address(BaseModel):
    line1: NoCardNumber = Field(min_length=1, max_length=30)
    line2: NoCardNumber | None = Field(None, max_length=30)


class Review(BaseModel):
    body: FreeText = Field(max_length=60)


def test_no_card_number_refuses_with_its_own_error_type() -> None:
    assert Address(line1="12 St James Square", line2="Flat 4").line2 == "Flat 4"
    for fields in ({"line1": "4242-4242-4242-4242"},
                   {"line1": "12 Main St", "line2": "card 378282246310005"}):
        with pytest.raises(ValidationError) as refused:
            Address.model_validate(fields)
        assert [error["type"] for error in refused.value.errors()] == [CARD_NUMBER_IN_TEXT]
    with pytest.raises(ValidationError, match="at most 30"):
        Address(line1="x" * 31)


def test_free_text_masks() -> None:
    assert Review(body="my card 4242 4242 4242 4242 worked").body == f"my card {MASK} worked"
    assert Review(body="five stars, order 4242424242424241").body == \
        "five stars, order 4242424242424241"


async def test_a_refused_card_number_is_the_response_code() -> None:
    router = APIRouter()

    @router.post("/addresses")
    async def create(address: Address) -> Address:
        return address

    app = create_service_app(make_settings(), routers=[router], uses_database=False,
                             uses_redis=False, uses_bus=False)
    async with running(app) as client:
        refused = await client.post("/addresses", json={"line1": "4242424242424242"})
        mixed = await client.post("/addresses", json={"line1": "4242424242424242",
                                                      "line2": "x" * 31})
    assert refused.status_code == 422
    assert refused.json()["code"] == CARD_NUMBER_IN_TEXT
    assert "card number" in refused.json()["message"]
    assert "4242" not in refused.text  # the input is not echoed back
    # with other mistakes too it is one validation error among others, each named
    assert (mixed.status_code, mixed.json()["code"]) == (422, "validation_error")
    assert CARD_NUMBER_IN_TEXT in {detail["type"] for detail in mixed.json()["details"]}


# -- log lines --------------------------------------------------------------------------------


@pytest.fixture
def alone() -> Iterator[tuple[BatchingStreamHandler, io.StringIO]]:
    """Logging as ``configure_logging`` leaves it: our JSON handler alone on the root."""
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter("probe"))
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO
    try:
        yield handler, stream
    finally:
        root.handlers, root.level = saved, saved_level
        handler.close()


def test_access_lines_and_other_lines_carry_no_card_number(
        alone: tuple[BatchingStreamHandler, io.StringIO]) -> None:
    handler, stream = alone
    log_access("GET", "/orders/4242 4242 4242 4242", 404, 0.001)  # the fast path
    logging.getLogger("httpx").info(
        'HTTP Request: GET http://127.0.0.1:1/search?q=x+5555+5555+5555+4444 "HTTP/1.1 200 OK"')
    logging.getLogger("probe").warning("odd order %s", "378282246310005",
                                       extra={"order": 4000056655665556, "ok": 12})
    handler.flush()
    text = stream.getvalue()
    assert find_pans(text) == []
    lines = [orjson.loads(line) for line in text.splitlines()]  # still JSON
    assert lines[0]["path"] == f"/orders/{MASK}"
    assert lines[0]["message"] == f"GET /orders/{MASK} 404"
    assert f"q=x+{MASK}" in lines[1]["message"]
    assert (lines[2]["message"], lines[2]["order"], lines[2]["ok"]) == (
        f"odd order {MASK}", MASK, 12)


def test_an_access_line_through_any_handler_carries_no_card_number() -> None:
    """The slow path: whatever else listens gets the path already masked."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level=logging.INFO)
    access_log.addHandler(keep)
    try:
        log_access("GET", "/payments/4242424242424242", 404, 0.001)
    finally:
        access_log.removeHandler(keep)
    assert [record.getMessage() for record in records] == [f"GET /payments/{MASK} 404"]
    assert records[0].path == f"/payments/{MASK}"  # type: ignore[attr-defined]


def test_plain_lines_carry_no_card_number() -> None:
    record = logging.LogRecord("probe", logging.INFO, "", 0, "card %s", ("4242424242424242",),
                               None)
    assert PlainFormatter().format(record).endswith(f"probe: card {MASK}")


def test_luhn() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
