"""Carrier adapters shaped like FedEx, UPS and USPS, behind :class:`~services.shipping.
rates.Carrier` next to the offline table.

Each adapter does three things and nothing else: it fetches (and keeps until it expires) an
OAuth client-credentials token, as all three carriers' current REST APIs require; it turns
a :class:`~services.shipping.rates.RateRequest` into the carrier's own request body — its
units (FedEx and UPS take kilograms and centimetres with decimals, USPS pounds and inches),
its field names and service codes; and it turns the carrier's answer back into
:class:`~services.shipping.rates.Quote` values in minor units and our service levels.

What an answer means follows the ``Carrier`` contract: a carrier that says it cannot serve
the shipment (a 4xx with the carrier's error body, an unknown service, another currency)
gives an empty list; one that cannot be asked (5xx, timeout, refused token) raises
:class:`CarrierUnavailable`, and :func:`~services.shipping.rates.quote` leaves it out. A
401 on a rate call means the token was revoked early: it is fetched again once.

The HTTP client is handed in (``HttpCaller``: the core's breaker-guarded ``ServiceClient``
in the service, any ``httpx.AsyncClient`` in a test), so each carrier gets its own breaker
and a slow carrier never holds checkout up for longer than the breaker's timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import httpx

from services.core.errors import DomainError
from services.shipping.rates import Parcel, Quote, RateRequest, ServiceLevel

#: ISO 4217 currencies without minor units; every other one the carriers quote has two.
ZERO_DECIMAL_CURRENCIES = frozenset({"jpy", "krw", "vnd", "clp", "isk", "huf", "twd", "ugx"})


class HttpCaller(Protocol):
    """What an adapter needs of an HTTP client: core ``ServiceClient`` and
    ``httpx.AsyncClient`` both fit."""

    async def post(self, url: str, **kwargs: Any) -> httpx.Response: ...


class CarrierUnavailable(RuntimeError):
    """The carrier could not be asked; the quote goes on without it."""


#: How a failed call surfaces: httpx's own errors from a bare client, 503/504 domain errors
#: (unreachable, timed out, breaker open) from the core's ``ServiceClient``.
_TRANSPORT_ERRORS = (httpx.HTTPError, OSError, DomainError)


def to_minor_units(amount: str | float | int | Decimal, currency: str) -> int:
    """A carrier's decimal amount ("12.34" or 12.34) in the currency's minor unit, rounded
    half up as the carriers bill (never through binary floats)."""
    exponent = 0 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 2
    value = Decimal(str(amount)).scaleb(exponent)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _kilograms(grams: int) -> Decimal:
    return (Decimal(grams) / 1000).quantize(Decimal("0.001"))


def _centimetres(mm: int) -> Decimal:
    return (Decimal(mm) / 10).quantize(Decimal("0.1"))


def _pounds(grams: int) -> Decimal:
    return (Decimal(grams) / Decimal("453.59237")).quantize(Decimal("0.01"),
                                                             rounding=ROUND_HALF_UP)


def _inches(mm: int) -> Decimal:
    return (Decimal(mm) / Decimal("25.4")).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _number(value: Decimal) -> float:
    """JSON numbers for carriers whose schema says ``number`` (FedEx, USPS)."""
    return float(value)


@dataclass(frozen=True)
class CarrierCredentials:
    client_id: str
    client_secret: str
    #: The shipper's account with the carrier (FedEx and UPS price by it; USPS optional).
    account_number: str | None = None


class _OAuthCarrier:
    """The part all three share: a cached client-credentials token and a rate call that
    maps transport trouble to :class:`CarrierUnavailable`."""

    name: str
    token_path: str

    def __init__(self, http: HttpCaller, credentials: CarrierCredentials,
                 clock: Any = time.monotonic) -> None:
        self.http = http
        self.credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch_token(self) -> tuple[str, float]:
        try:
            response = await self.http.post(self.token_path, data={
                "grant_type": "client_credentials",
                "client_id": self.credentials.client_id,
                "client_secret": self.credentials.client_secret,
            }, headers={"Content-Type": "application/x-www-form-urlencoded"})
        except _TRANSPORT_ERRORS as exc:
            raise CarrierUnavailable(f"{self.name}: token request failed: {exc!r}") from exc
        if response.status_code != 200:
            raise CarrierUnavailable(f"{self.name}: token refused: HTTP {response.status_code}")
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 3600))

    async def token(self, *, renew: bool = False) -> str:
        async with self._lock:  # one fetch when many quotes start at once
            if renew or self._token is None or self._clock() >= self._expires_at:
                token, lifetime = await self._fetch_token()
                # Renew a minute early so a token never expires between check and use.
                self._token, self._expires_at = token, self._clock() + max(0.0, lifetime - 60)
            return self._token

    async def _post(self, path: str, body: Mapping[str, Any],
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        for renew in (False, True):
            token = await self.token(renew=renew)
            try:
                response = await self.http.post(path, json=body, headers={
                    "Authorization": f"Bearer {token}", **(headers or {})})
            except _TRANSPORT_ERRORS as exc:
                raise CarrierUnavailable(f"{self.name}: rate request failed: {exc!r}") from exc
            if response.status_code != 401:
                break
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            raise CarrierUnavailable(f"{self.name}: HTTP {response.status_code}")
        return response


# -- FedEx -----------------------------------------------------------------------------------

#: FedEx service types and what they are to us, with transit days when FedEx gives none.
FEDEX_SERVICES: dict[str, tuple[ServiceLevel, int, int]] = {
    "FEDEX_GROUND": (ServiceLevel.STANDARD, 1, 5),
    "GROUND_HOME_DELIVERY": (ServiceLevel.STANDARD, 1, 5),
    "SMART_POST": (ServiceLevel.ECONOMY, 2, 7),
    "FEDEX_EXPRESS_SAVER": (ServiceLevel.EXPRESS, 3, 3),
    "FEDEX_2_DAY": (ServiceLevel.EXPRESS, 2, 2),
    "STANDARD_OVERNIGHT": (ServiceLevel.OVERNIGHT, 1, 1),
    "PRIORITY_OVERNIGHT": (ServiceLevel.OVERNIGHT, 1, 1),
    "INTERNATIONAL_ECONOMY": (ServiceLevel.STANDARD, 4, 6),
    "FEDEX_INTERNATIONAL_PRIORITY": (ServiceLevel.EXPRESS, 1, 3),
    "INTERNATIONAL_PRIORITY": (ServiceLevel.EXPRESS, 1, 3),
}

_FEDEX_DAYS = {"ONE_DAY": 1, "TWO_DAYS": 2, "THREE_DAYS": 3, "FOUR_DAYS": 4, "FIVE_DAYS": 5,
               "SIX_DAYS": 6, "SEVEN_DAYS": 7, "EIGHT_DAYS": 8, "NINE_DAYS": 9, "TEN_DAYS": 10}


class FedExCarrier(_OAuthCarrier):
    """FedEx Rate API (``POST /rate/v1/rates/quotes``), account rates."""

    name = "fedex"
    token_path = "/oauth/token"
    rate_path = "/rate/v1/rates/quotes"

    @staticmethod
    def _package(parcel: Parcel) -> dict[str, Any]:
        return {"weight": {"units": "KG", "value": _number(_kilograms(parcel.weight_grams))},
                "dimensions": {"length": round(_centimetres(parcel.length_mm)),
                               "width": round(_centimetres(parcel.width_mm)),
                               "height": round(_centimetres(parcel.height_mm)),
                               "units": "CM"}}

    def build_request(self, request: RateRequest) -> dict[str, Any]:
        def address(country: str, postal: str | None) -> dict[str, Any]:
            return {"address": {"countryCode": country,
                                **({"postalCode": postal} if postal else {})}}

        return {
            "accountNumber": {"value": self.credentials.account_number or ""},
            "rateRequestControlParameters": {"returnTransitTimes": True},
            "requestedShipment": {
                "shipper": address(request.origin_country, request.origin_postal_code),
                "recipient": address(request.destination_country,
                                     request.destination_postal_code),
                "pickupType": "DROPOFF_AT_FEDEX_LOCATION",
                "rateRequestType": ["ACCOUNT"],
                "preferredCurrency": request.currency.upper(),
                "requestedPackageLineItems": [self._package(p) for p in request.parcels],
            },
        }

    def parse_response(self, request: RateRequest, body: Mapping[str, Any]) -> list[Quote]:
        quotes = []
        for detail in body.get("output", {}).get("rateReplyDetails", []):
            known = FEDEX_SERVICES.get(str(detail.get("serviceType")))
            if known is None:
                continue
            level, days_min, days_max = known
            rated = next((r for r in detail.get("ratedShipmentDetails", [])
                          if str(r.get("currency", "")).lower() == request.currency), None)
            if rated is None:
                continue
            transit = _FEDEX_DAYS.get(str(detail.get("operationalDetail", {})
                                          .get("transitTime")))
            if transit is not None:
                days_min = days_max = transit
            quotes.append(Quote(
                carrier=self.name, service_level=level,
                amount=to_minor_units(rated["totalNetCharge"], request.currency),
                currency=request.currency, transit_days_min=days_min,
                transit_days_max=days_max,
                billable_weight_grams=_billable_grams(rated.get("shipmentRateDetail", {})
                                                      .get("totalBillingWeight"), request)))
        return quotes

    async def rates(self, request: RateRequest) -> list[Quote]:
        response = await self._post(self.rate_path, self.build_request(request),
                                    {"X-locale": "en_US"})
        if response.status_code != 200:
            return []  # FedEx's "errors": no service for this shipment as described
        return _wanted(self.parse_response(request, response.json()), request)


def _billable_grams(weight: Mapping[str, Any] | None, request: RateRequest) -> int:
    """FedEx's billing weight ({"units": "KG"|"LB", "value": n}) in grams; the actual
    weight when it sends none."""
    actual = sum(p.weight_grams for p in request.parcels)
    if not weight or "value" not in weight:
        return actual
    factor = Decimal("453.59237") if str(weight.get("units")).upper() == "LB" else Decimal(1000)
    return int((Decimal(str(weight["value"])) * factor).to_integral_value(ROUND_HALF_UP))


# -- UPS -------------------------------------------------------------------------------------

#: UPS service codes and what they are to us, with transit days when UPS gives none.
UPS_SERVICES: dict[str, tuple[ServiceLevel, int, int]] = {
    "01": (ServiceLevel.OVERNIGHT, 1, 1),   # Next Day Air
    "13": (ServiceLevel.OVERNIGHT, 1, 1),   # Next Day Air Saver
    "14": (ServiceLevel.OVERNIGHT, 1, 1),   # Next Day Air Early
    "02": (ServiceLevel.EXPRESS, 2, 2),     # 2nd Day Air
    "59": (ServiceLevel.EXPRESS, 2, 2),     # 2nd Day Air A.M.
    "12": (ServiceLevel.EXPRESS, 3, 3),     # 3 Day Select
    "03": (ServiceLevel.STANDARD, 1, 5),    # Ground
    "11": (ServiceLevel.STANDARD, 1, 5),    # Standard (to Canada, Mexico, within Europe)
    "93": (ServiceLevel.ECONOMY, 2, 7),     # SurePost
    "07": (ServiceLevel.EXPRESS, 1, 3),     # Worldwide Express
    "65": (ServiceLevel.EXPRESS, 1, 3),     # Worldwide Saver
    "08": (ServiceLevel.STANDARD, 2, 5),    # Worldwide Expedited
}


class UpsCarrier(_OAuthCarrier):
    """UPS Rating API, "Shop" (every service in one call)."""

    name = "ups"
    token_path = "/security/v1/oauth/token"
    rate_path = "/api/rating/v2403/Shop"

    @staticmethod
    def _package(parcel: Parcel) -> dict[str, Any]:
        # UPS's schema takes every number as a string.
        return {
            "PackagingType": {"Code": "02", "Description": "Package"},
            "Dimensions": {"UnitOfMeasurement": {"Code": "CM"},
                           "Length": str(_centimetres(parcel.length_mm)),
                           "Width": str(_centimetres(parcel.width_mm)),
                           "Height": str(_centimetres(parcel.height_mm))},
            "PackageWeight": {"UnitOfMeasurement": {"Code": "KGS"},
                              "Weight": str(_kilograms(parcel.weight_grams))},
        }

    def build_request(self, request: RateRequest) -> dict[str, Any]:
        def address(country: str, postal: str | None) -> dict[str, Any]:
            return {"CountryCode": country, **({"PostalCode": postal} if postal else {})}

        origin = address(request.origin_country, request.origin_postal_code)
        shipper: dict[str, Any] = {"Address": origin}
        if self.credentials.account_number:
            shipper["ShipperNumber"] = self.credentials.account_number
        return {"RateRequest": {
            "Request": {"RequestOption": "Shop"},
            "Shipment": {
                "Shipper": shipper,
                "ShipFrom": {"Address": origin},
                "ShipTo": {"Address": address(request.destination_country,
                                              request.destination_postal_code)},
                "ShipmentRatingOptions": {"NegotiatedRatesIndicator": "Y"},
                "Package": [self._package(p) for p in request.parcels],
            },
        }}

    def parse_response(self, request: RateRequest, body: Mapping[str, Any]) -> list[Quote]:
        rated = body.get("RateResponse", {}).get("RatedShipment", [])
        if isinstance(rated, dict):  # UPS sends one rated shipment as an object
            rated = [rated]
        quotes = []
        for shipment in rated:
            known = UPS_SERVICES.get(str(shipment.get("Service", {}).get("Code")))
            if known is None:
                continue
            level, days_min, days_max = known
            # The account's negotiated price when UPS grants one, else the published one.
            charges = (shipment.get("NegotiatedRateCharges", {}).get("TotalCharge")
                       or shipment.get("TotalCharges", {}))
            if str(charges.get("CurrencyCode", "")).lower() != request.currency:
                continue
            days = shipment.get("GuaranteedDelivery", {}).get("BusinessDaysInTransit")
            if days:
                days_min = days_max = int(days)
            billed = shipment.get("BillingWeight", {})
            quotes.append(Quote(
                carrier=self.name, service_level=level,
                amount=to_minor_units(charges["MonetaryValue"], request.currency),
                currency=request.currency, transit_days_min=days_min,
                transit_days_max=days_max,
                billable_weight_grams=_billable_grams(
                    {"units": "LB" if billed.get("UnitOfMeasurement", {}).get("Code") == "LBS"
                     else "KG", "value": billed["Weight"]} if "Weight" in billed else None,
                    request)))
        return quotes

    async def rates(self, request: RateRequest) -> list[Quote]:
        response = await self._post(self.rate_path, self.build_request(request),
                                    {"transactionSrc": "kommerce"})
        if response.status_code != 200:
            return []  # UPS's {"response": {"errors": [...]}}: no service between these
        return _wanted(self.parse_response(request, response.json()), request)


# -- USPS ------------------------------------------------------------------------------------

#: USPS mail classes and what they are to us. USPS's prices API gives no transit time (the
#: service standards API does); these are its published standards.
USPS_SERVICES: dict[str, tuple[ServiceLevel, int, int]] = {
    "PARCEL_SELECT": (ServiceLevel.ECONOMY, 2, 8),
    "USPS_GROUND_ADVANTAGE": (ServiceLevel.STANDARD, 2, 5),
    "PRIORITY_MAIL": (ServiceLevel.EXPRESS, 1, 3),
    "PRIORITY_MAIL_EXPRESS": (ServiceLevel.OVERNIGHT, 1, 2),
}


class UspsCarrier(_OAuthCarrier):
    """USPS Domestic Prices API v3 (``POST /prices/v3/total-rates/search``): one call per
    parcel, US to US, in US dollars; anything else it cannot take."""

    name = "usps"
    token_path = "/oauth2/v3/token"
    rate_path = "/prices/v3/total-rates/search"

    def __init__(self, http: HttpCaller, credentials: CarrierCredentials,
                 clock: Any = time.monotonic, today: Any = date.today) -> None:
        super().__init__(http, credentials, clock)
        self._today = today

    def build_request(self, request: RateRequest, parcel: Parcel) -> dict[str, Any]:
        body: dict[str, Any] = {
            "originZIPCode": request.origin_postal_code,
            "destinationZIPCode": request.destination_postal_code,
            "weight": _number(_pounds(parcel.weight_grams)),
            "length": _number(_inches(parcel.length_mm)),
            "width": _number(_inches(parcel.width_mm)),
            "height": _number(_inches(parcel.height_mm)),
            "priceType": "COMMERCIAL",
            "mailingDate": self._today().isoformat(),
        }
        if self.credentials.account_number:
            body.update(accountType="EPS", accountNumber=self.credentials.account_number)
        return body

    @staticmethod
    def parse_response(body: Mapping[str, Any]) -> dict[str, Decimal]:
        """The cheapest price per mail class in one parcel's answer, in dollars."""
        prices: dict[str, Decimal] = {}
        for option in body.get("rateOptions", []):
            for rate in option.get("rates", []):
                mail_class = str(rate.get("mailClass"))
                # totalBasePrice includes the option's fees; a bare rate carries "price".
                price = Decimal(str(option.get("totalBasePrice", rate.get("price"))))
                if mail_class not in prices or price < prices[mail_class]:
                    prices[mail_class] = price
        return prices

    async def rates(self, request: RateRequest) -> list[Quote]:
        if (request.origin_country, request.destination_country) != ("US", "US") \
                or request.currency != "usd" \
                or not (request.origin_postal_code and request.destination_postal_code):
            return []
        answers = await asyncio.gather(*(
            self._post(self.rate_path, self.build_request(request, parcel))
            for parcel in request.parcels))
        if any(answer.status_code != 200 for answer in answers):
            return []  # USPS's {"error": {...}}: too heavy, a ZIP it does not serve
        per_parcel = [self.parse_response(answer.json()) for answer in answers]
        # Offer a class only when every parcel can go by it.
        classes = set.intersection(*(set(prices) for prices in per_parcel)) & set(USPS_SERVICES)
        quotes = []
        for mail_class in sorted(classes):
            level, days_min, days_max = USPS_SERVICES[mail_class]
            total = sum((prices[mail_class] for prices in per_parcel), Decimal(0))
            quotes.append(Quote(
                carrier=self.name, service_level=level, amount=to_minor_units(total, "usd"),
                currency="usd", transit_days_min=days_min, transit_days_max=days_max,
                billable_weight_grams=sum(p.weight_grams for p in request.parcels)))
        return _wanted(quotes, request)


def _wanted(quotes: list[Quote], request: RateRequest) -> list[Quote]:
    """Only the levels asked for; and per level the carrier's cheapest (FedEx and UPS
    answer with several services per level)."""
    best: dict[ServiceLevel, Quote] = {}
    for offer in quotes:
        if request.service_levels and offer.service_level not in request.service_levels:
            continue
        seen = best.get(offer.service_level)
        if seen is None or (offer.amount, offer.transit_days_max) < (seen.amount,
                                                                     seen.transit_days_max):
            best[offer.service_level] = offer
    return list(best.values())
