"""The shipping service's settings: the core's, plus where parcels leave from."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import ServiceSettings


class ShippingSettings(ServiceSettings):
    service_name: str = Field(
        "shipping", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: schema, cache prefix, event source and topic.",
    )
    ship_from_country: str = Field("US", pattern=r"^[A-Z]{2}$",
                                   description="Country of the warehouse parcels leave from.")
    rate_currency: str = Field("usd", pattern=r"^[a-z]{3}$",
                               description="Currency of the built-in table rates.")
    carrier_timeout_seconds: float = Field(
        3.0, gt=0, description="How long a carrier may take to quote before it is skipped.")
