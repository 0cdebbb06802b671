"""How long stock may be held, and that the order saga's holds fit inside it.

The product service refuses a hold longer than ``reservation_max_ttl_seconds``; the order
service asks for ``reservation_ttl_seconds``. If the second outgrew the first every
checkout would be refused, and if the hold were shorter than the saga's slowest path (the
shopper's 3-D Secure window and the step retries) good orders would lose their stock
before the commit.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.order.settings import OrderSettings
from services.product.settings import ProductSettings


def default(model: type[OrderSettings] | type[ProductSettings], field: str) -> float:
    value = model.model_fields[field].default
    assert isinstance(value, int | float)
    return value


def test_the_order_saga_s_hold_fits_inside_the_product_service_s_maximum() -> None:
    asked = default(OrderSettings, "reservation_ttl_seconds")
    longest = default(ProductSettings, "reservation_max_ttl_seconds")

    assert asked <= longest
    assert longest <= 3600, "a hold keeps stock from every shopper: minutes, not hours"


def test_the_order_saga_s_hold_outlasts_its_slowest_checkout() -> None:
    asked = default(OrderSettings, "reservation_ttl_seconds")
    three_d_secure = default(OrderSettings, "saga_customer_action_timeout_seconds")
    # reserve, charge and ship, each resent up to saga_max_attempts times, before the commit
    retries = (3 * default(OrderSettings, "saga_max_attempts")
               * default(OrderSettings, "saga_step_timeout_seconds"))

    assert asked >= three_d_secure + retries


def test_a_default_hold_longer_than_the_maximum_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="exceeds reservation_max_ttl_seconds"):
        ProductSettings(environment="test", reservation_default_ttl_seconds=1500,
                        reservation_max_ttl_seconds=1200)


def test_the_maximum_cannot_be_configured_to_a_day() -> None:
    with pytest.raises(ValidationError, match="reservation_max_ttl_seconds"):
        ProductSettings(environment="test", reservation_max_ttl_seconds=86_400)
