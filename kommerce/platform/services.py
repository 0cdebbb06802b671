"""The services ``kommerce up`` runs, as one table.

Adding a service to the local platform is one :class:`ServiceSpec` line below. Only
services whose package exists with its ``__main__`` and ``app`` modules are started
(``importlib.util.find_spec``), so the table can name services still being written without
breaking ``kommerce up``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceSpec:
    """One service process: ``python -m <module>`` with settings from the environment."""

    name: str
    #: Whether it gets a database of its own (``kommerce_<name>``); the gateway has none.
    uses_database: bool = True
    #: Arguments after ``python -m services.<name>`` (a service whose ``__main__`` is a
    #: command group needs its serve command).
    args: tuple[str, ...] = ()
    #: Extra environment for this service only (on top of what every service gets).
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def database(self) -> str:
        return f"kommerce_{self.name}"

    @property
    def url_variable(self) -> str:
        """The ``*_service_url`` setting through which the gateway and other services find
        this one (``KOMMERCE_PRODUCT_SERVICE_URL`` ...)."""
        return f"KOMMERCE_{self.name.upper()}_SERVICE_URL"

    def missing(self) -> str | None:
        """What this checkout lacks to run it, or None. Every service package has
        ``__main__`` (what ``python -m`` runs) and ``app`` with ``create_app`` (next to
        ``api``, ``service``, ``repository``, ``models``, ``schemas``, ``events``,
        ``settings`` and ``migrations/``; see :mod:`services.core`); a package still being
        written may lack either, and is then left out rather than failing the start."""
        if importlib.util.find_spec(self.module) is None:
            return f"no package {self.module}"
        for part in ("__main__", "app"):
            if importlib.util.find_spec(f"{self.module}.{part}") is None:
                return f"no module {self.module}.{part} yet"
        return None

    def installed(self) -> bool:
        return self.missing() is None


#: Every service behind the gateway, in start order (they start together; the order is
#: only how they are listed). The gateway is not in here: it starts last, in front.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("user"),
    ServiceSpec("product"),
    ServiceSpec("search", args=("serve",)),
    ServiceSpec("order"),
    ServiceSpec("payment"),
    # The demo catalog is priced in euros (seed.py) and the built-in rate table quotes in
    # one currency, so the local shop ships from a European warehouse at euro rates.
    ServiceSpec("shipping", env={"KOMMERCE_RATE_CURRENCY": "eur",
                                 "KOMMERCE_SHIP_FROM_COUNTRY": "DE"}),
    ServiceSpec("review"),
)

GATEWAY = ServiceSpec("gateway", uses_database=False)


def absent_services() -> dict[str, str]:
    """The services of the table left out because the checkout lacks something, and why."""
    return {spec.name: reason for spec in SERVICES if (reason := spec.missing()) is not None}


def installed_services(skip: Collection[str] = ()) -> list[ServiceSpec]:
    """The services of the table whose package exists in this checkout, less ``skip``."""
    unknown = set(skip) - {spec.name for spec in SERVICES}
    if unknown:
        raise ValueError(f"no such service: {', '.join(sorted(unknown))}; the services are "
                         f"{', '.join(spec.name for spec in SERVICES)}")
    return [spec for spec in SERVICES if spec.name not in skip and spec.installed()]
