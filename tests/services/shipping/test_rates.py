"""Rate calculation, pure: dimensional weight, zones, limits, service levels, and carriers
that fail without failing the quote."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.shipping.rates import (
    Parcel,
    Quote,
    RateError,
    RateRequest,
    ServiceLevel,
    TableRate,
    TableRateCarrier,
    Zone,
    billable_weight_grams,
    default_table_carrier,
    dimensional_weight_grams,
    quote,
    zone_between,
)

BOX = Parcel(weight_grams=1_200, length_mm=300, width_mm=200, height_mm=100)


def request(*parcels: Parcel, origin: str = "US", destination: str = "US",
            levels: frozenset[ServiceLevel] = frozenset()) -> RateRequest:
    return RateRequest(origin, destination, parcels or (BOX,), "usd", levels)


def test_zones_follow_countries_and_regions() -> None:
    assert zone_between("US", "US") is Zone.DOMESTIC
    assert zone_between("US", "CA") is Zone.REGIONAL
    assert zone_between("DE", "FR") is Zone.REGIONAL
    assert zone_between("US", "DE") is Zone.INTERNATIONAL


def test_a_large_light_box_is_billed_by_its_volume() -> None:
    pillow = Parcel(weight_grams=300, length_mm=600, width_mm=400, height_mm=400)
    assert dimensional_weight_grams(pillow, 5000) == 19_200  # 96 000 cm³ / 5000 cm³/kg
    assert billable_weight_grams(pillow, 5000, 500) == 19_500


def test_a_small_heavy_box_is_billed_by_its_weight() -> None:
    assert billable_weight_grams(BOX, 5000, 500) == 1_500


async def test_domestic_quote_prices_each_level_and_sorts_cheapest_first() -> None:
    offers = await quote([default_table_carrier()], request())
    assert [o.service_level for o in offers] == [
        ServiceLevel.ECONOMY, ServiceLevel.STANDARD, ServiceLevel.EXPRESS,
        ServiceLevel.OVERNIGHT]
    economy = offers[0]
    assert economy.amount == 399 + 50 * 3 and economy.billable_weight_grams == 1_500
    assert (economy.transit_days_min, economy.transit_days_max) == (4, 7)


async def test_international_offers_only_the_levels_in_its_table() -> None:
    offers = await quote([default_table_carrier()], request(destination="JP"))
    assert {o.service_level for o in offers} == {ServiceLevel.STANDARD, ServiceLevel.EXPRESS}


async def test_requested_levels_filter_the_offers() -> None:
    offers = await quote([default_table_carrier()],
                         request(levels=frozenset({ServiceLevel.EXPRESS})))
    assert [o.service_level for o in offers] == [ServiceLevel.EXPRESS]


async def test_multiple_parcels_add_up_and_oversize_costs_extra() -> None:
    long_box = Parcel(weight_grams=2_000, length_mm=1_100, width_mm=100, height_mm=100)
    carrier = default_table_carrier()
    single = await carrier.rates(request(BOX, levels=frozenset({ServiceLevel.STANDARD})))
    both = await carrier.rates(request(BOX, long_box,
                                       levels=frozenset({ServiceLevel.STANDARD})))
    # 11 000 cm³ bills as 2.2 kg → five 500 g steps, plus the oversize surcharge.
    assert both[0].amount == single[0].amount + (599 + 75 * 5) + 1500


@pytest.mark.parametrize("parcel", [
    Parcel(weight_grams=30_001, length_mm=100, width_mm=100, height_mm=100),
    Parcel(weight_grams=1_000, length_mm=1_300, width_mm=100, height_mm=100),
    Parcel(weight_grams=1_000, length_mm=1_000, width_mm=600, height_mm=600),
])
async def test_parcels_over_the_limits_get_no_quote(parcel: Parcel) -> None:
    with pytest.raises(RateError):
        await quote([default_table_carrier()], request(parcel))


def test_malformed_parcels_and_empty_shipments_are_refused() -> None:
    with pytest.raises(RateError):
        Parcel(weight_grams=0, length_mm=1, width_mm=1, height_mm=1)
    with pytest.raises(RateError):
        RateRequest("US", "US", (), "usd")


async def test_another_currency_gets_no_quote_from_a_table_in_dollars() -> None:
    with pytest.raises(RateError):
        await quote([default_table_carrier()], RateRequest("US", "US", (BOX,), "eur"))


class Broken:
    name = "fedex"

    async def rates(self, request: RateRequest) -> list[Quote]:
        raise OSError("connection refused")


class Slow:
    name = "ups"

    async def rates(self, request: RateRequest) -> list[Quote]:
        await asyncio.sleep(10)
        return []


async def test_failing_and_slow_carriers_leave_the_table_rates_standing() -> None:
    offers = await quote([Broken(), Slow(), default_table_carrier()], request(),
                         timeout_seconds=0.2)
    assert {o.carrier for o in offers} == {"table"}


PARCELS = st.builds(Parcel, weight_grams=st.integers(1, 30_000),
                    length_mm=st.integers(1, 1_200), width_mm=st.integers(1, 700),
                    height_mm=st.integers(1, 700))


@given(parcel=PARCELS, extra_grams=st.integers(1, 5_000))
def test_heavier_never_costs_less(parcel: Parcel, extra_grams: int) -> None:
    carrier = default_table_carrier()
    rate = TableRate(500, 100, 1, 2)
    heavier = Parcel(parcel.weight_grams + extra_grams, parcel.length_mm, parcel.width_mm,
                     parcel.height_mm)
    assert carrier.price(heavier, rate)[0] >= carrier.price(parcel, rate)[0]


@given(parcel=PARCELS)
def test_billable_weight_is_at_least_the_actual_and_a_whole_step(parcel: Parcel) -> None:
    billable = billable_weight_grams(parcel, 5000, 500)
    assert billable >= parcel.weight_grams and billable % 500 == 0
    assert billable - max(parcel.weight_grams, dimensional_weight_grams(parcel, 5000)) < 500


@given(parcel=PARCELS, destination=st.sampled_from(["US", "CA", "DE", "JP"]))
async def test_faster_levels_never_cost_less(parcel: Parcel, destination: str) -> None:
    carrier: TableRateCarrier = default_table_carrier()
    if not carrier.accepts(parcel):
        return
    offers = {o.service_level: o.amount
              for o in await carrier.rates(request(parcel, destination=destination))}
    ordered = [offers[level] for level in ServiceLevel if level in offers]
    assert ordered == sorted(ordered)
