"""The gateway route table: what the CommerceService operator writes is what the gateway
reads, a round trip changes nothing, and a bad table is refused with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kommerce.contracts.route_table import (
    KNOWN_METHODS,
    ROUTE_TABLE_KEY,
    ROUTE_TABLE_VERSION_ANNOTATION,
    Route,
    RouteTable,
    content_version,
    parse_route_table,
)
from operators.commerceservice.render import RoutedService, render_route_table, route_table
from operators.commerceservice.spec import CommerceServiceSpec
from services.gateway.routes import load_route_table

PROPERTIES = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])

segments = st.from_regex(r"[a-z0-9][-a-z0-9_~]{0,12}", fullmatch=True)
prefixes = st.lists(segments, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
methods = st.sets(st.sampled_from(KNOWN_METHODS), min_size=1).map(sorted)
routes = st.fixed_dictionaries({
    "pathPrefix": prefixes, "methods": methods, "authRequired": st.booleans(),
    "rateLimitPerMinute": st.none() | st.integers(1, 1_000_000)})
components = st.sampled_from(["product", "order", "user", "payment", "review", "search",
                              "shipping"])


@st.composite
def shops(draw: st.DrawFn) -> list[RoutedService]:
    """A namespace of services, each declaring distinct prefixes (some shared with
    another service: the oldest keeps them)."""
    count = draw(st.integers(1, 4))
    services = []
    for index in range(count):
        declared = draw(st.lists(routes, min_size=1, max_size=4,
                                 unique_by=lambda r: r["pathPrefix"]))
        spec = CommerceServiceSpec.model_validate(
            {"component": draw(components), "image": "shop:1", "routes": declared})
        color = draw(st.none() | st.sampled_from(["blue", "green"]))
        services.append(RoutedService(f"svc-{index}", f"uid-{index}", spec, color,
                                      created=f"2026-01-0{index + 1}T00:00:00Z"))
    return services


@PROPERTIES
@given(shops())
def test_the_gateway_loads_every_table_the_operator_renders(
        tmp_path_factory: pytest.TempPathFactory, services: list[RoutedService]) -> None:
    config_map = render_route_table("shop", services)
    folder = tmp_path_factory.mktemp("gateway")
    (folder / ROUTE_TABLE_KEY).write_text(config_map["data"][ROUTE_TABLE_KEY])

    loaded = load_route_table(folder)

    written = route_table("shop", services)
    assert loaded.version == written.version == \
        config_map["metadata"]["annotations"][ROUTE_TABLE_VERSION_ANNOTATION]
    assert [r.wire() for r in loaded.routes] == [r.wire() for r in written.routes]
    for route in written.routes:
        match = loaded.match(route.path_prefix + "/42")
        assert match is not None and match.service == route.service
        assert all(match.allows(method) for method in route.methods)


@PROPERTIES
@given(st.lists(routes, min_size=0, max_size=6, unique_by=lambda r: r["pathPrefix"]),
       st.sampled_from(["svc-a", "svc-b"]))
def test_a_table_round_trips_through_its_json(declared: list[dict[str, Any]],
                                              service: str) -> None:
    table = RouteTable.written(Route.model_validate(
        {**entry, "service": service, "upstream": f"http://{service}:80"}) for entry in declared)

    again = parse_route_table(json.loads(table.to_json()))

    assert again == table
    assert again.to_json() == table.to_json()
    assert again.version == content_version(again.routes)


def test_a_flip_of_colour_is_a_new_version() -> None:
    spec = CommerceServiceSpec.model_validate(
        {"component": "product", "image": "shop:1", "routes": [{"pathPrefix": "/api/p"}]})
    blue = route_table("shop", [RoutedService("product", "u", spec, "blue")])
    green = route_table("shop", [RoutedService("product", "u", spec, "green")])
    assert blue.version != green.version
    assert blue.routes[0].active_color == "blue"


def test_head_is_served_where_get_is_declared_but_not_written() -> None:
    route = Route(path_prefix="/api/x", methods=["get"], service="x", upstream="http://x")
    assert route.methods == {"GET"}
    assert route.allows("HEAD") and not route.allows("POST")
    assert route.allowed_methods() == ["GET", "HEAD"]
    assert route.wire()["methods"] == ["GET"]


@pytest.mark.parametrize(("entry", "problem"), [
    ({"pathPrefix": "/api/../admin"}, "must not contain '.' or '..' segments"),
    ({"methods": ["GET", "BREW"]}, "unknown HTTP methods ['BREW']"),
    ({"upstream": "ftp://x:21"}, "upstream must be an http(s) URL with a host"),
    ({"upstream": "http://x:80/base"}, "upstream must be a base URL without path or query"),
    ({"upstream": "http://x:port"}, "not a URL"),
    ({"upstream": "http://exa mple:80"}, "not a URL"),
    ({"timeoutSeconds": 0}, "greater than 0"),
])
def test_a_bad_route_is_refused_with_what_is_wrong(entry: dict[str, Any], problem: str) -> None:
    document = {"routes": [{"pathPrefix": "/api/x", "service": "x", "upstream": "http://x:80",
                            **entry}]}
    with pytest.raises(ValidationError) as refused:
        parse_route_table(document)
    assert problem in str(refused.value)


def test_a_prefix_routed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="path prefix /api/x is routed twice"):
        parse_route_table([{"pathPrefix": "/api/x", "service": "a", "upstream": "http://a"},
                           {"pathPrefix": "/api/x/", "service": "b", "upstream": "http://b"}])


def test_a_document_that_is_no_table_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a JSON object with a 'routes' list"):
        parse_route_table("routes")


def test_keys_the_gateway_does_not_know_are_ignored() -> None:
    table = parse_route_table({"version": "v", "routes": [
        {"pathPrefix": "/a", "service": "a", "upstream": "http://a", "weight": 3}]})
    assert table.routes[0].service == "a"
