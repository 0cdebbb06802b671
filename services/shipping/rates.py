"""Shipping rates: what a parcel costs to send, by weight, size, zone and service level.

Pure and offline. Carriers are adapters behind :class:`Carrier` (those that ask FedEx, UPS
and USPS over HTTP are in :mod:`services.shipping.carriers`); :class:`TableRateCarrier`
prices from a table held in configuration, so checkout can always quote a price even when
no carrier's API can be reached. :func:`quote` asks every carrier, drops the ones that fail
or cannot take the parcel, and returns the offers cheapest first.

Amounts are integers in the currency's minor unit, weights in grams, lengths in
millimetres: integer arithmetic only, so a quote never differs by a rounding cent between
two calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

log = logging.getLogger(__name__)


class ServiceLevel(StrEnum):
    ECONOMY = "economy"
    STANDARD = "standard"
    EXPRESS = "express"
    OVERNIGHT = "overnight"


class Zone(StrEnum):
    DOMESTIC = "domestic"
    REGIONAL = "regional"
    INTERNATIONAL = "international"


#: Countries shipped between as "regional" (one customs union, road freight).
DEFAULT_REGIONS: tuple[frozenset[str], ...] = (
    frozenset({"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU",
               "IE", "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES",
               "SE"}),
    frozenset({"US", "CA", "MX"}),
)


def zone_between(origin: str, destination: str,
                 regions: Sequence[frozenset[str]] = DEFAULT_REGIONS) -> Zone:
    if origin == destination:
        return Zone.DOMESTIC
    if any(origin in region and destination in region for region in regions):
        return Zone.REGIONAL
    return Zone.INTERNATIONAL


class RateError(ValueError):
    """A parcel no carrier can take as described (too heavy, too large, malformed)."""


@dataclass(frozen=True, slots=True)
class Parcel:
    weight_grams: int
    length_mm: int
    width_mm: int
    height_mm: int

    def __post_init__(self) -> None:
        if min(self.weight_grams, self.length_mm, self.width_mm, self.height_mm) <= 0:
            raise RateError("weight and every dimension must be positive")

    @property
    def volume_mm3(self) -> int:
        return self.length_mm * self.width_mm * self.height_mm

    @property
    def longest_mm(self) -> int:
        return max(self.length_mm, self.width_mm, self.height_mm)

    @property
    def length_plus_girth_mm(self) -> int:
        """The carriers' size measure: longest side plus twice the other two."""
        sides = sorted((self.length_mm, self.width_mm, self.height_mm))
        return sides[2] + 2 * (sides[0] + sides[1])


def dimensional_weight_grams(parcel: Parcel, divisor_cm3_per_kg: int) -> int:
    """Volume over the carrier's divisor (5000 cm³/kg is the common one), rounded up:
    a large light box is billed as if it were heavy, as carriers do."""
    # mm³ → cm³ is /1000; kg → g is *1000: they cancel, leaving volume_mm3 / divisor.
    return -(-parcel.volume_mm3 // divisor_cm3_per_kg)


def billable_weight_grams(parcel: Parcel, divisor_cm3_per_kg: int, step_grams: int) -> int:
    """The greater of actual and dimensional weight, rounded up to the carrier's step."""
    weight = max(parcel.weight_grams, dimensional_weight_grams(parcel, divisor_cm3_per_kg))
    return -(-weight // step_grams) * step_grams


@dataclass(frozen=True, slots=True)
class RateRequest:
    origin_country: str
    destination_country: str
    parcels: tuple[Parcel, ...]
    currency: str
    #: Only these levels; all the carrier offers when empty.
    service_levels: frozenset[ServiceLevel] = frozenset()
    #: Postal codes: carriers' APIs price by them (USPS needs both); the table ignores them.
    origin_postal_code: str | None = None
    destination_postal_code: str | None = None

    def __post_init__(self) -> None:
        if not self.parcels:
            raise RateError("a shipment needs at least one parcel")


@dataclass(frozen=True, slots=True)
class Quote:
    carrier: str
    service_level: ServiceLevel
    amount: int
    currency: str
    transit_days_min: int
    transit_days_max: int
    billable_weight_grams: int


class Carrier(Protocol):
    """A carrier adapter (FedEx, UPS, USPS or a table) answering with its offers; an empty
    list means "cannot take this shipment", an exception means "could not ask"."""

    @property
    def name(self) -> str:
        """The carrier's name on its quotes (read-only: a frozen dataclass satisfies it)."""
        ...

    async def rates(self, request: RateRequest) -> list[Quote]: ...


@dataclass(frozen=True, slots=True)
class TableRate:
    """One row of a rate table: a base price, then a price per started weight step."""

    base: int
    per_step: int
    transit_days_min: int
    transit_days_max: int


@dataclass(frozen=True)
class TableRateCarrier:
    """Rates from a table: ``table[zone][service_level]``; a missing cell means the level is
    not offered in that zone. Parcels over the limits are refused, not priced."""

    name: str
    currency: str
    table: Mapping[Zone, Mapping[ServiceLevel, TableRate]]
    step_grams: int = 500
    divisor_cm3_per_kg: int = 5000
    max_weight_grams: int = 30_000
    max_length_mm: int = 1_200
    max_length_plus_girth_mm: int = 3_000
    #: Added per parcel whose longest side exceeds ``oversize_from_mm``.
    oversize_surcharge: int = 0
    oversize_from_mm: int = 1_000
    regions: Sequence[frozenset[str]] = field(default=DEFAULT_REGIONS)

    def accepts(self, parcel: Parcel) -> bool:
        return (parcel.weight_grams <= self.max_weight_grams
                and parcel.longest_mm <= self.max_length_mm
                and parcel.length_plus_girth_mm <= self.max_length_plus_girth_mm)

    def price(self, parcel: Parcel, rate: TableRate) -> tuple[int, int]:
        """(amount, billable grams) for one parcel."""
        billable = billable_weight_grams(parcel, self.divisor_cm3_per_kg, self.step_grams)
        amount = rate.base + rate.per_step * (billable // self.step_grams)
        if parcel.longest_mm > self.oversize_from_mm:
            amount += self.oversize_surcharge
        return amount, billable

    async def rates(self, request: RateRequest) -> list[Quote]:
        if request.currency != self.currency or not all(map(self.accepts, request.parcels)):
            return []
        zone = zone_between(request.origin_country, request.destination_country,
                            self.regions)
        quotes = []
        for level, rate in self.table.get(zone, {}).items():
            if request.service_levels and level not in request.service_levels:
                continue
            priced = [self.price(parcel, rate) for parcel in request.parcels]
            quotes.append(Quote(
                carrier=self.name, service_level=level,
                amount=sum(amount for amount, _ in priced), currency=self.currency,
                transit_days_min=rate.transit_days_min,
                transit_days_max=rate.transit_days_max,
                billable_weight_grams=sum(grams for _, grams in priced)))
        return quotes


async def quote(carriers: Sequence[Carrier], request: RateRequest,
                timeout_seconds: float = 3.0) -> list[Quote]:
    """Every carrier's offers, cheapest (then fastest) first. A carrier that errs or is
    slow is left out rather than failing checkout — which is why a table carrier belongs
    in the list. Raises :class:`RateError` when nobody can take the shipment."""

    async def ask(carrier: Carrier) -> list[Quote]:
        try:
            async with asyncio.timeout(timeout_seconds):
                return await carrier.rates(request)
        except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
            log.warning("carrier %s could not quote: %r", carrier.name, exc)
            return []

    answers = await asyncio.gather(*(ask(c) for c in carriers))
    offers = sorted((q for answer in answers for q in answer),
                    key=lambda q: (q.amount, q.transit_days_max, q.carrier, q.service_level))
    if not offers:
        raise RateError("no carrier can take this shipment as described")
    return offers


def default_table_carrier(currency: str = "usd") -> TableRateCarrier:
    """A sensible offline table for a small shop; operators override it in configuration."""
    table = {
        Zone.DOMESTIC: {
            ServiceLevel.ECONOMY: TableRate(399, 50, 4, 7),
            ServiceLevel.STANDARD: TableRate(599, 75, 2, 4),
            ServiceLevel.EXPRESS: TableRate(1299, 120, 1, 2),
            ServiceLevel.OVERNIGHT: TableRate(2499, 200, 1, 1),
        },
        Zone.REGIONAL: {
            ServiceLevel.ECONOMY: TableRate(899, 100, 5, 10),
            ServiceLevel.STANDARD: TableRate(1299, 150, 3, 6),
            ServiceLevel.EXPRESS: TableRate(2499, 250, 2, 3),
        },
        Zone.INTERNATIONAL: {
            ServiceLevel.STANDARD: TableRate(2499, 400, 7, 21),
            ServiceLevel.EXPRESS: TableRate(4999, 700, 3, 5),
        },
    }
    return TableRateCarrier(name="table", currency=currency, table=table,
                            oversize_surcharge=1500)
