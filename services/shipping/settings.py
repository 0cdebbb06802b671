"""The shipping service's settings: the core's, plus where parcels leave from and which
carriers' APIs to ask.

A carrier's adapter is used when its API address and client credentials are all set
(``KOMMERCE_FEDEX_API_URL``, ``KOMMERCE_FEDEX_CLIENT_ID``, ``KOMMERCE_FEDEX_CLIENT_SECRET``
…, from a Secret in production); the built-in table carrier always quotes, so a shop with
none configured still ships.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from services.core.settings import ServiceSettings


class ShippingSettings(ServiceSettings):
    service_name: str = Field(
        "shipping", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, event source and topic.",
    )
    ship_from_country: str = Field("US", pattern=r"^[A-Z]{2}$",
                                   description="Country of the warehouse parcels leave from.")
    ship_from_postal_code: str | None = Field(
        None, max_length=20, description="Postal code of the warehouse (carriers' APIs price "
        "by it; USPS needs it).")
    rate_currency: str = Field("usd", pattern=r"^[a-z]{3}$",
                               description="Currency of the built-in table rates.")
    carrier_timeout_seconds: float = Field(
        3.0, gt=0, description="How long a carrier may take to quote before it is skipped.")
    fedex_api_url: str | None = Field(
        None, description="FedEx API address; unset = FedEx is not asked.")
    fedex_client_id: str | None = Field(None, description="FedEx API client id (OAuth).")
    fedex_client_secret: SecretStr | None = Field(
        None, description="FedEx API client secret (OAuth).")
    fedex_account_number: str | None = Field(
        None, description="The shop's FedEx account, for account rates.")
    ups_api_url: str | None = Field(
        None, description="UPS API address; unset = UPS is not asked.")
    ups_client_id: str | None = Field(None, description="UPS API client id (OAuth).")
    ups_client_secret: SecretStr | None = Field(
        None, description="UPS API client secret (OAuth).")
    ups_account_number: str | None = Field(
        None, description="The shop's UPS account, for account rates.")
    usps_api_url: str | None = Field(
        None, description="USPS API address; unset = USPS is not asked.")
    usps_client_id: str | None = Field(None, description="USPS API client id (OAuth).")
    usps_client_secret: SecretStr | None = Field(
        None, description="USPS API client secret (OAuth).")
    usps_account_number: str | None = Field(
        None, description="The shop's USPS account, for account rates.")
