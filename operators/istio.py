"""Istio VirtualService and DestinationRule builders (``networking.istio.io/v1``).

Shared by the CommerceService (one destination, path-prefix routes) and the blue-green
rollout (``blue``/``green`` subsets with weights), and fed by a CircuitBreakerPolicy when
one targets the service: one function per object, so a policy merges the same way
whichever kind renders the routes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from operators.circuitbreaker.spec import CircuitBreakerPolicySpec

ISTIO_API_VERSION = "networking.istio.io/v1"

# Without a policy: a generous overall timeout, and retries only for calls that never
# reached the service (safe for non-idempotent requests such as checkout and payment).
DEFAULT_TIMEOUT = "15s"
DEFAULT_RETRIES: dict[str, Any] = {
    "attempts": 2,
    "perTryTimeout": "5s",
    "retryOn": "connect-failure,refused-stream,unavailable",
}
DEFAULT_LOAD_BALANCER = "LEAST_REQUEST"


@dataclass(frozen=True)
class TrafficSettings:
    """What a CircuitBreakerPolicy contributes to a service's routes (or the defaults)."""

    timeout: str = DEFAULT_TIMEOUT
    retries: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RETRIES))
    connection_pool: dict[str, Any] | None = None
    outlier_detection: dict[str, Any] | None = None


def traffic_settings(policy: CircuitBreakerPolicySpec | None) -> TrafficSettings:
    """Translate a policy into Istio's field names; without one, the defaults above."""
    if policy is None:
        return TrafficSettings()
    pool, outlier, retries = policy.connection_pool, policy.outlier_detection, policy.retries
    http: dict[str, Any] = {"http1MaxPendingRequests": pool.http1_max_pending_requests}
    if pool.max_requests_per_connection:
        http["maxRequestsPerConnection"] = pool.max_requests_per_connection
    return TrafficSettings(
        timeout=policy.timeout,
        retries={"attempts": retries.attempts, "perTryTimeout": retries.per_try_timeout,
                 "retryOn": retries.retry_on} if retries.attempts else {"attempts": 0},
        connection_pool={
            "http": http,
            "tcp": {"connectTimeout": pool.connect_timeout,
                    "maxConnections": pool.max_connections},
        },
        outlier_detection={
            "baseEjectionTime": outlier.base_ejection_time,
            "consecutive5xxErrors": outlier.consecutive_5xx_errors,
            "interval": outlier.interval,
            "maxEjectionPercent": outlier.max_ejection_percent,
        },
    )


@dataclass(frozen=True)
class Destination:
    """Where a route sends traffic: a host, optionally one subset, with a weight."""

    host: str
    port: int
    subset: str | None = None
    weight: int | None = None

    def to_route(self) -> dict[str, Any]:
        destination: dict[str, Any] = {"host": self.host, "port": {"number": self.port}}
        if self.subset is not None:
            destination["subset"] = self.subset
        route: dict[str, Any] = {"destination": destination}
        if self.weight is not None:
            route["weight"] = self.weight
        return route


def route_name(prefix: str) -> str:
    """A readable, stable name for a path-prefix route (``/api/products`` -> ``api-products``)."""
    return re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-") or "root"


def virtual_service(metadata: dict[str, Any], host: str, prefixes: Sequence[str],
                    destinations: Sequence[Destination], settings: TrafficSettings,
                    ) -> dict[str, Any]:
    """Routes for ``host``: one per path prefix (longest first, so the most specific wins)
    and a catch-all, all with the same destinations, timeout and retries."""
    def http_route(name: str, prefix: str | None) -> dict[str, Any]:
        # Fresh objects per route: the apply layer may edit one route without touching others.
        route: dict[str, Any] = {"name": name}
        if prefix is not None:
            route["match"] = [{"uri": {"prefix": prefix}}]
        route["route"] = [destination.to_route() for destination in destinations]
        route["timeout"] = settings.timeout
        route["retries"] = copy.deepcopy(settings.retries)
        return route

    ordered = sorted(prefixes, key=lambda prefix: (-len(prefix), prefix))
    http = [http_route(route_name(prefix), prefix) for prefix in ordered]
    http.append(http_route("default", None))
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": {"hosts": [host], "http": http},
    }


def destination_rule(metadata: dict[str, Any], host: str, settings: TrafficSettings,
                     subsets: Sequence[tuple[str, dict[str, str]]] = ()) -> dict[str, Any]:
    """Load balancing, connection pool and outlier detection for ``host``; the traffic
    policy sits at the top so it applies to every subset alike."""
    policy: dict[str, Any] = {"loadBalancer": {"simple": DEFAULT_LOAD_BALANCER}}
    if settings.connection_pool is not None:
        policy["connectionPool"] = settings.connection_pool
    if settings.outlier_detection is not None:
        policy["outlierDetection"] = settings.outlier_detection
    spec: dict[str, Any] = {"host": host, "trafficPolicy": policy}
    if subsets:
        spec["subsets"] = [{"name": name, "labels": dict(sorted(labels.items()))}
                           for name, labels in subsets]
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "DestinationRule",
        "metadata": metadata,
        "spec": spec,
    }
