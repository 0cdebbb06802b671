"""The gateway's side of the route table: reading the mounted file, and the local default.

The format — :class:`~kommerce.contracts.route_table.Route`, ``RouteTable``, matching by the
longest prefix that covers the path **on a segment boundary** (``/api/products`` serves
``/api/products`` and ``/api/products/42`` but never ``/api/productsadmin``) — is the
contract the CommerceService operator writes (:mod:`kommerce.contracts.route_table`). The
gateway mounts the ConfigMap, hot-reloads it (a bad file is refused and the table in force
stays, see :mod:`services.core.reload`) and matches every request against it. Without a
file it uses :func:`local_route_table`, the same routes with every service on loopback. No
I/O here besides reading the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from kommerce.contracts.route_table import (
    ALL_METHODS,
    KNOWN_METHODS,
    ROUTE_TABLE_KEY,
    Route,
    RouteTable,
    has_dot_segment,
    parse_route_table,
)
from services.gateway.settings import GatewaySettings

__all__ = ["ALL_METHODS", "KNOWN_METHODS", "ROUTE_TABLE_FILE", "Route", "RouteTable",
           "has_dot_segment", "load_route_table", "local_route_table", "parse_route_table",
           "route_table_file"]

#: The file name inside the mounted ConfigMap folder.
ROUTE_TABLE_FILE = ROUTE_TABLE_KEY


def route_table_file(path: Path) -> Path:
    """``path`` itself, or ``routes.json`` inside it when it is the mounted folder."""
    return path / ROUTE_TABLE_FILE if path.is_dir() else path


def load_route_table(path: Path) -> RouteTable:
    """Read the table from ``path``, or from ``routes.json`` in the folder ``path``."""
    return parse_route_table(orjson.loads(route_table_file(path).read_bytes()))


def local_route_table(settings: GatewaySettings) -> RouteTable:
    """The platform's routes with every service on its local port: what the operator would
    render from ``manifests/samples`` (a test keeps the two in step), for local runs."""
    def route(prefix: str, service: str, url: str, methods: Iterable[str], *,
              auth: bool, per_minute: int | None) -> Route:
        return Route(path_prefix=prefix, methods=frozenset(methods), auth_required=auth,
                     rate_limit_per_minute=per_minute, service=service, upstream=url)

    read_write = ("GET", "POST", "PUT", "DELETE")
    every_write = ("GET", "POST", "PUT", "PATCH", "DELETE")
    user, product = settings.user_service_url, settings.product_service_url
    order, payment = settings.order_service_url, settings.payment_service_url
    return RouteTable(version="local", routes=(
        route("/api/auth", "user-service", user, ["POST"], auth=False, per_minute=20),
        route("/api/users", "user-service", user, every_write, auth=True, per_minute=100),
        route("/api/products", "product-service", product, read_write, auth=False,
              per_minute=100),
        route("/api/categories", "product-service", product, read_write, auth=False,
              per_minute=100),
        # No /api/inventory: reservations are the order saga's, service to service; a
        # shopper who could reach them could hold or sell a variant's whole stock.
        route("/api/search", "search-service", settings.search_service_url, ["GET"],
              auth=False, per_minute=100),
        route("/api/orders", "order-service", order, every_write, auth=True, per_minute=50),
        route("/api/cart", "order-service", order, every_write, auth=True, per_minute=100),
        route("/api/checkout", "order-service", order, ["POST"], auth=True, per_minute=50),
        route("/api/payments", "payment-service", payment, ["GET", "POST", "DELETE"],
              auth=True, per_minute=50),
        route("/api/webhooks/stripe", "payment-service", payment, ["POST"], auth=False,
              per_minute=None),
        route("/api/reviews", "review-service", settings.review_service_url, every_write,
              auth=False, per_minute=100),
        route("/api/shipments", "shipping-service", settings.shipping_service_url,
              ("GET", "POST"), auth=True, per_minute=100),
        route("/api/rates", "shipping-service", settings.shipping_service_url, ["POST"],
              auth=True, per_minute=100),
    ))
