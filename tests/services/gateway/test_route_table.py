"""The route table: its format (the operator's), matching, the local default, hot reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.commerceservice.render import (
    ROUTE_TABLE_KEY,
    RoutedService,
    render_route_table,
)
from operators.commerceservice.spec import CommerceServiceSpec
from services.gateway.routes import (
    ROUTE_TABLE_FILE,
    Route,
    RouteTable,
    load_route_table,
    local_route_table,
    parse_route_table,
)
from services.gateway.settings import GatewaySettings
from tests.services.support import eventually

from .conftest import Echo, StartGateway, route, write_json

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def sample_services() -> list[RoutedService]:
    services = []
    for file in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(file.read_text()):
            if document and document.get("kind") == "CommerceService":
                spec = CommerceServiceSpec.model_validate(document["spec"])
                name = document["metadata"]["name"]
                services.append(RoutedService(name, f"uid-{name}", spec))
    return services


def summary(table: RouteTable) -> set[tuple[Any, ...]]:
    return {(r.path_prefix, r.methods, r.auth_required, r.rate_limit_per_minute, r.service)
            for r in table.routes}


def test_the_gateway_reads_the_table_the_operator_renders(tmp_path: Path) -> None:
    config_map = render_route_table("shop", sample_services())
    folder = tmp_path / "gateway"
    folder.mkdir()
    (folder / ROUTE_TABLE_KEY).write_text(config_map["data"][ROUTE_TABLE_KEY])

    table = load_route_table(folder)  # the mounted folder, or the file in it

    assert ROUTE_TABLE_FILE == ROUTE_TABLE_KEY
    assert table == load_route_table(folder / ROUTE_TABLE_KEY)
    assert table.version == config_map["metadata"]["annotations"][
        "kommerce.io/route-table-version"]
    products = table.match("/api/products/42")
    assert products is not None
    assert products.service == "product-service"
    assert products.upstream == "http://product-service.shop.svc.cluster.local:80"
    assert products.rate_limit_per_minute == 100  # the reference's Kong limits
    orders = table.match("/api/orders")
    assert orders is not None
    assert (orders.rate_limit_per_minute, orders.auth_required) == (50, True)


def test_the_local_table_routes_what_the_samples_declare() -> None:
    """Local runs and a cluster built from manifests/samples route alike."""
    rendered = parse_route_table(json.loads(
        render_route_table("shop", sample_services())["data"][ROUTE_TABLE_KEY]))

    assert summary(local_route_table(GatewaySettings())) == summary(rendered)


def test_the_local_table_uses_the_configured_service_urls() -> None:
    table = local_route_table(GatewaySettings(product_service_url="http://localhost:9102"))

    products = table.match("/api/products")
    assert products is not None
    assert products.upstream == "http://localhost:9102"


@pytest.mark.parametrize(("path", "expected"), [
    ("/api/products", "/api/products"),
    ("/api/products/", "/api/products"),
    ("/api/products/7/reviews", "/api/products/7/reviews"),
    ("/api/products/7", "/api/products"),
    ("/api/productsx", "/api"),
    ("/api", "/api"),
    ("/other", None),
])
def test_the_longest_covering_prefix_wins(path: str, expected: str | None) -> None:
    table = parse_route_table({"routes": [
        {"pathPrefix": "/api", "service": "root", "upstream": "http://root:80"},
        {"pathPrefix": "/api/products/", "service": "p", "upstream": "http://p:80"},
        {"pathPrefix": "/api/products/7/reviews", "service": "r", "upstream": "http://r:80"},
    ]})

    found = table.match(path)

    assert (found.path_prefix if found else None) == expected


@pytest.mark.parametrize(("entry", "problem"), [
    ({"pathPrefix": "api/x"}, "pattern"),
    ({"pathPrefix": "/api/../x"}, "segments"),
    ({"methods": ["GET", "BREW"]}, "unknown HTTP methods"),
    ({"methods": []}, "at least 1"),
    ({"upstream": "ftp://x:21"}, "http(s)"),
    ({"upstream": "http://x:80/base"}, "without path"),
    ({"rateLimitPerMinute": 0}, "greater than or equal to 1"),
])
def test_a_bad_entry_is_refused_with_a_reason(entry: dict[str, Any], problem: str) -> None:
    document = {"routes": [{"pathPrefix": "/api/x", "service": "x", "upstream": "http://x:80",
                            **entry}]}

    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_route_table(document)


def test_a_prefix_routed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="routed twice"):
        RouteTable(routes=(Route(path_prefix="/api/x", service="a", upstream="http://a"),
                           Route(path_prefix="/api/x/", service="b", upstream="http://b")))



@pytest.mark.redis
async def test_a_changed_table_takes_effect_without_a_restart(
        start_gateway: StartGateway, echo_a: Echo, echo_b: Echo) -> None:
    gateway = await start_gateway([route("/api/moving", echo_a.url)])
    assert (await gateway.client.get("/api/moving/1")).json()["service"] == "a"

    write_json(gateway.route_file, {"version": "test-2", "routes": [
        route("/api/moving", echo_b.url), route("/api/added", echo_b.url)]})

    async def moved() -> bool:
        response = await gateway.client.get("/api/moving/1")
        return response.status_code == 200 and response.json()["service"] == "b"

    await eventually(moved, within=10, what="the new route table to take effect")
    assert (await gateway.client.get("/api/added/x")).status_code == 200


@pytest.mark.redis
async def test_a_broken_table_is_refused_and_the_old_one_stays(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/stable", echo_a.url)])
    watched = gateway.app.state.gateway.watched

    write_json(gateway.route_file, {"routes": [{"pathPrefix": "no-slash"}]})

    async def refused() -> bool:
        return watched.last_error is not None

    await eventually(refused, within=10, what="the broken table to be noticed")
    assert (await gateway.client.get("/api/stable/1")).status_code == 200
    assert (await gateway.client.get("/ready")).status_code == 200


@pytest.mark.redis
async def test_without_its_table_the_gateway_is_not_ready_until_it_appears(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway(None)

    not_ready = await gateway.client.get("/ready")
    unrouted = await gateway.client.get("/api/late/1")
    write_json(gateway.route_file, {"routes": [route("/api/late", echo_a.url)]})

    async def ready() -> bool:
        return (await gateway.client.get("/ready")).status_code == 200

    await eventually(ready, within=10, what="the gateway to become ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["failed"] == ["routes"]
    assert unrouted.status_code == 404
    assert (await gateway.client.get("/api/late/1")).status_code == 200
