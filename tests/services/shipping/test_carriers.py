"""The FedEx, UPS and USPS adapters against a real loopback HTTP server that answers in
each carrier's shape (token endpoint included), and the offline table-rate path.

The server records every request it receives, so the tests pin both directions: what the
adapter sends (paths, OAuth, units, field names) and what it makes of the answer (minor
units, service levels, transit days, the cheapest service per level).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from kommerce.testbed.redis import RedisServer
from services.shipping.app import create_app
from services.shipping.carriers import (
    CarrierCredentials,
    CarrierUnavailable,
    FedExCarrier,
    UpsCarrier,
    UspsCarrier,
    to_minor_units,
)
from services.shipping.rates import (
    Parcel,
    Quote,
    RateRequest,
    ServiceLevel,
    default_table_carrier,
    quote,
)
from services.shipping.settings import ShippingSettings
from tests.services.support import running, unique

BOX = Parcel(weight_grams=2_000, length_mm=300, width_mm=200, height_mm=100)
SMALL = Parcel(weight_grams=500, length_mm=200, width_mm=150, height_mm=50)
CREDENTIALS = CarrierCredentials("client-1", "secret-1", "ACCT-9")

FEDEX_ANSWER = {"transactionId": "t-1", "output": {"rateReplyDetails": [
    {"serviceType": "FEDEX_GROUND", "serviceName": "FedEx Ground",
     "operationalDetail": {"transitTime": "THREE_DAYS"},
     "ratedShipmentDetails": [{"rateType": "ACCOUNT", "totalNetCharge": 11.5,
                               "currency": "USD",
                               "shipmentRateDetail": {"totalBillingWeight": {
                                   "units": "KG", "value": 2.0}}}]},
    {"serviceType": "FEDEX_2_DAY", "serviceName": "FedEx 2Day",
     "ratedShipmentDetails": [{"rateType": "ACCOUNT", "totalNetCharge": 24.07,
                               "currency": "USD"}]},
    {"serviceType": "FEDEX_EXPRESS_SAVER", "serviceName": "FedEx Express Saver",
     "ratedShipmentDetails": [{"rateType": "ACCOUNT", "totalNetCharge": 19.995,
                               "currency": "USD"}]},
    {"serviceType": "FEDEX_FREIGHT_PRIORITY", "ratedShipmentDetails": [
        {"totalNetCharge": 300, "currency": "USD"}]},  # not a service we sell
]}}

UPS_ANSWER = {"RateResponse": {
    "Response": {"ResponseStatus": {"Code": "1", "Description": "Success"}},
    "RatedShipment": [
        {"Service": {"Code": "03"}, "BillingWeight": {
            "UnitOfMeasurement": {"Code": "KGS"}, "Weight": "2.5"},
         "TotalCharges": {"CurrencyCode": "USD", "MonetaryValue": "14.20"},
         "NegotiatedRateCharges": {"TotalCharge": {"CurrencyCode": "USD",
                                                   "MonetaryValue": "12.10"}},
         "GuaranteedDelivery": {"BusinessDaysInTransit": "4"}},
        {"Service": {"Code": "01"},
         "TotalCharges": {"CurrencyCode": "USD", "MonetaryValue": "61.00"},
         "GuaranteedDelivery": {"BusinessDaysInTransit": "1"}},
    ]}}

UPS_NO_SERVICE = {"response": {"errors": [{
    "code": "111210",
    "message": "The requested service is unavailable between the selected locations."}]}}


def usps_answer(pounds: float) -> dict[str, Any]:
    """USPS prices by weight: a heavier parcel costs more, so sums are checkable."""
    ground = round(5 + pounds, 2)
    return {"rateOptions": [
        {"totalBasePrice": ground, "rates": [
            {"SKU": "DUXP0XXXXC07050", "description": "USPS Ground Advantage",
             "priceType": "COMMERCIAL", "price": ground, "mailClass": "USPS_GROUND_ADVANTAGE",
             "zone": "08"}]},
        {"totalBasePrice": round(ground + 4, 2), "rates": [
            {"description": "Priority Mail", "price": round(ground + 4, 2),
             "mailClass": "PRIORITY_MAIL", "zone": "08"}]},
        {"totalBasePrice": 99.0, "rates": [
            {"description": "Media Mail", "price": 99.0, "mailClass": "MEDIA_MAIL"}]},
    ]}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class CarrierServer:
    """What the fake carrier API got, and switches to make it misbehave."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    fail_with: int | None = None
    revoke_next_token: bool = False
    tokens_issued: int = 0

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


@pytest.fixture
def carrier_api() -> Iterator[CarrierServer]:
    state = CarrierServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = "x-www-form-urlencoded" in (self.headers.get("Content-Type") or "")
            body = dict(urllib.parse.parse_qsl(raw)) if form else json.loads(raw or "null")
            with lock:
                state.seen.append(Seen("POST", self.path, dict(self.headers), body))
            if self.path in ("/oauth/token", "/security/v1/oauth/token", "/oauth2/v3/token"):
                if body.get("client_secret") != "secret-1":
                    return self._answer(401, {"error": "invalid_client"})
                with lock:
                    state.tokens_issued += 1
                    token = f"tok-{state.tokens_issued}"
                return self._answer(200, {"access_token": token, "token_type": "bearer",
                                          "expires_in": 3599})
            auth = self.headers.get("Authorization", "")
            with lock:
                revoke, state.revoke_next_token = state.revoke_next_token, False
            if not auth.startswith("Bearer tok-") or revoke:
                return self._answer(401, {"errors": [{"code": "NOT.AUTHORIZED.ERROR"}]})
            if state.fail_with is not None:
                return self._answer(state.fail_with, {"errors": [{"code": "SYSTEM.ERROR"}]})
            if self.path == "/rate/v1/rates/quotes":
                return self._answer(200, FEDEX_ANSWER)
            if self.path == "/api/rating/v2403/Shop":
                ship_to = body["RateRequest"]["Shipment"]["ShipTo"]["Address"]
                if ship_to["CountryCode"] == "AQ":
                    return self._answer(400, UPS_NO_SERVICE)
                return self._answer(200, UPS_ANSWER)
            if self.path == "/prices/v3/total-rates/search":
                return self._answer(200, usps_answer(body["weight"]))
            return self._answer(404, {"error": "not found"})

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
async def http(carrier_api: CarrierServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=carrier_api.url, timeout=5) as client:
        yield client


def us_request(*parcels: Parcel, levels: frozenset[ServiceLevel] = frozenset(),
               destination: str = "US") -> RateRequest:
    return RateRequest("US", destination, parcels or (BOX,), "usd", levels,
                       origin_postal_code="10001", destination_postal_code="94103")


def offers(quotes: list[Quote]) -> dict[ServiceLevel, tuple[int, int, int]]:
    return {q.service_level: (q.amount, q.transit_days_min, q.transit_days_max)
            for q in quotes}


# -- money -----------------------------------------------------------------------------------


def test_carrier_amounts_become_minor_units_without_float_error() -> None:
    assert to_minor_units("12.34", "usd") == 1234
    assert to_minor_units(0.29, "usd") == 29  # 0.29 * 100 is 28.999… as a float
    assert to_minor_units(19.995, "usd") == 2000  # half up, as carriers bill
    assert to_minor_units("1500", "jpy") == 1500


# -- FedEx -----------------------------------------------------------------------------------


async def test_fedex_is_asked_in_its_rate_api_shape_and_answers_in_cents(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    quotes = await FedExCarrier(http, CREDENTIALS).rates(us_request(BOX, SMALL))

    (token,) = carrier_api.requests_to("/oauth/token")
    assert token.body == {"grant_type": "client_credentials", "client_id": "client-1",
                          "client_secret": "secret-1"}
    (rate,) = carrier_api.requests_to("/rate/v1/rates/quotes")
    assert rate.headers["Authorization"] == "Bearer tok-1"
    shipment = rate.body["requestedShipment"]
    assert rate.body["accountNumber"] == {"value": "ACCT-9"}
    assert shipment["shipper"]["address"] == {"countryCode": "US", "postalCode": "10001"}
    assert shipment["recipient"]["address"] == {"countryCode": "US", "postalCode": "94103"}
    assert shipment["rateRequestType"] == ["ACCOUNT"]
    assert shipment["requestedPackageLineItems"] == [
        {"weight": {"units": "KG", "value": 2.0},
         "dimensions": {"length": 30, "width": 20, "height": 10, "units": "CM"}},
        {"weight": {"units": "KG", "value": 0.5},
         "dimensions": {"length": 20, "width": 15, "height": 5, "units": "CM"}}]

    # Express Saver (20.00) beats 2Day (24.07) for "express"; freight is not ours to sell.
    assert offers(quotes) == {ServiceLevel.STANDARD: (1150, 3, 3),
                              ServiceLevel.EXPRESS: (2000, 3, 3)}
    ground = next(q for q in quotes if q.service_level is ServiceLevel.STANDARD)
    assert (ground.carrier, ground.currency, ground.billable_weight_grams) == ("fedex", "usd",
                                                                                2000)


async def test_a_token_is_reused_until_it_is_revoked_then_fetched_once_more(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    fedex = FedExCarrier(http, CREDENTIALS)
    await fedex.rates(us_request())
    await fedex.rates(us_request())
    assert carrier_api.tokens_issued == 1

    carrier_api.revoke_next_token = True
    assert await fedex.rates(us_request())  # 401, new token, asked again
    assert carrier_api.tokens_issued == 2
    assert carrier_api.requests_to("/rate/v1/rates/quotes")[-1].headers[
        "Authorization"] == "Bearer tok-2"


async def test_bad_credentials_or_a_carrier_outage_mean_could_not_ask(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    with pytest.raises(CarrierUnavailable):
        await FedExCarrier(http, CarrierCredentials("client-1", "wrong")).rates(us_request())
    carrier_api.fail_with = 503
    with pytest.raises(CarrierUnavailable):
        await UpsCarrier(http, CREDENTIALS).rates(us_request())


# -- UPS -------------------------------------------------------------------------------------


async def test_ups_is_asked_in_its_rating_shape_and_negotiated_rates_win(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    quotes = await UpsCarrier(http, CREDENTIALS).rates(us_request(BOX))

    assert carrier_api.requests_to("/security/v1/oauth/token")
    (rate,) = carrier_api.requests_to("/api/rating/v2403/Shop")
    body = rate.body["RateRequest"]
    assert body["Request"] == {"RequestOption": "Shop"}
    shipment = body["Shipment"]
    assert shipment["Shipper"] == {"Address": {"CountryCode": "US", "PostalCode": "10001"},
                                   "ShipperNumber": "ACCT-9"}
    assert shipment["ShipTo"] == {"Address": {"CountryCode": "US", "PostalCode": "94103"}}
    assert shipment["Package"] == [{
        "PackagingType": {"Code": "02", "Description": "Package"},
        "Dimensions": {"UnitOfMeasurement": {"Code": "CM"},
                       "Length": "30.0", "Width": "20.0", "Height": "10.0"},
        "PackageWeight": {"UnitOfMeasurement": {"Code": "KGS"}, "Weight": "2.000"}}]

    assert offers(quotes) == {ServiceLevel.STANDARD: (1210, 4, 4),
                              ServiceLevel.OVERNIGHT: (6100, 1, 1)}
    ground = next(q for q in quotes if q.service_level is ServiceLevel.STANDARD)
    assert ground.billable_weight_grams == 2500


async def test_ups_saying_no_service_is_no_offer_not_an_error(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    assert await UpsCarrier(http, CREDENTIALS).rates(us_request(destination="AQ")) == []


async def test_only_the_service_levels_asked_for_are_offered(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    quotes = await UpsCarrier(http, CREDENTIALS).rates(
        us_request(levels=frozenset({ServiceLevel.OVERNIGHT})))
    assert [q.service_level for q in quotes] == [ServiceLevel.OVERNIGHT]


# -- USPS ------------------------------------------------------------------------------------


async def test_usps_is_asked_per_parcel_in_pounds_and_inches_and_the_prices_add_up(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    usps = UspsCarrier(http, CREDENTIALS, today=lambda: date(2026, 11, 24))
    quotes = await usps.rates(us_request(BOX, SMALL))

    assert carrier_api.requests_to("/oauth2/v3/token")
    asked = sorted((s.body for s in carrier_api.requests_to("/prices/v3/total-rates/search")),
                   key=lambda b: b["weight"])
    assert asked == [
        {"originZIPCode": "10001", "destinationZIPCode": "94103", "weight": 1.1,
         "length": 7.9, "width": 5.9, "height": 2.0, "priceType": "COMMERCIAL",
         "mailingDate": "2026-11-24", "accountType": "EPS", "accountNumber": "ACCT-9"},
        {"originZIPCode": "10001", "destinationZIPCode": "94103", "weight": 4.41,
         "length": 11.8, "width": 7.9, "height": 3.9, "priceType": "COMMERCIAL",
         "mailingDate": "2026-11-24", "accountType": "EPS", "accountNumber": "ACCT-9"}]

    # Ground: (5 + 1.1) + (5 + 4.41) = 15.51; Priority is 4.00 more per parcel. Media Mail
    # is not a class we sell.
    assert offers(quotes) == {ServiceLevel.STANDARD: (1551, 2, 5),
                              ServiceLevel.EXPRESS: (2351, 1, 3)}


async def test_usps_takes_only_domestic_dollar_shipments_with_zip_codes(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    usps = UspsCarrier(http, CREDENTIALS)
    assert await usps.rates(us_request(destination="DE")) == []
    assert await usps.rates(RateRequest("US", "US", (BOX,), "usd")) == []
    assert carrier_api.seen == []  # not even a token was asked for


# -- all together, and offline ---------------------------------------------------------------


async def test_quote_merges_every_carrier_and_the_table_cheapest_first(
        carrier_api: CarrierServer, http: httpx.AsyncClient) -> None:
    carriers = [FedExCarrier(http, CREDENTIALS), UpsCarrier(http, CREDENTIALS),
                UspsCarrier(http, CREDENTIALS), default_table_carrier()]
    quotes = await quote(carriers, us_request(levels=frozenset({ServiceLevel.STANDARD})))
    assert [(q.carrier, q.amount) for q in quotes] == [
        ("table", 599 + 75 * 4), ("usps", 941), ("fedex", 1150), ("ups", 1210)]


async def test_with_every_carrier_unreachable_the_table_still_quotes() -> None:
    """The offline path: nothing listens on the carriers' address, checkout still ships."""
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=1) as unreachable:
        carriers = [FedExCarrier(unreachable, CREDENTIALS),
                    UpsCarrier(unreachable, CREDENTIALS),
                    UspsCarrier(unreachable, CREDENTIALS), default_table_carrier()]
        quotes = await quote(carriers, us_request())
    assert quotes
    assert {q.carrier for q in quotes} == {"table"}


@pytest.mark.postgres
@pytest.mark.redis
async def test_the_service_asks_the_carriers_its_settings_configure(
        carrier_api: CarrierServer, shipping_database_url: str,
        redis_server: RedisServer) -> None:
    settings = ShippingSettings(
        environment="test", log_json=False, database_url=shipping_database_url,
        database_schema=unique("shipping"), redis_url=redis_server.url,
        cache_prefix=unique("s") + ":", event_topic_prefix=unique("t") + ".",
        ship_from_postal_code="10001",
        fedex_api_url=carrier_api.url, fedex_client_id="client-1",
        fedex_client_secret="secret-1", fedex_account_number="ACCT-9",
        ups_api_url=carrier_api.url, ups_client_id="client-1",
        ups_client_secret="wrong")  # UPS refuses the token: left out, not fatal
    async with running(create_app(settings)) as client:
        response = await client.post("/rates", json={
            "destination_country": "US", "destination_postal_code": "94103",
            "parcels": [{"weight_grams": 2000, "length_mm": 300, "width_mm": 200,
                         "height_mm": 100}],
            "currency": "usd", "service_levels": ["standard"]})
    assert response.status_code == 200, response.text
    assert {(q["carrier"], q["amount"]) for q in response.json()} == {
        ("fedex", 1150), ("table", 599 + 75 * 4)}
    (rate,) = carrier_api.requests_to("/rate/v1/rates/quotes")
    assert rate.body["requestedShipment"]["recipient"]["address"]["postalCode"] == "94103"
