"""Requests reach the service the route table names, as the client wrote them."""

from __future__ import annotations

import orjson
import pytest

from .conftest import Echo, StartGateway, raw_get, route

pytestmark = pytest.mark.redis


async def test_the_longest_matching_prefix_picks_the_service(
        start_gateway: StartGateway, echo_a: Echo, echo_b: Echo) -> None:
    gateway = await start_gateway([route("/api/shop", echo_a.url),
                                   route("/api/shop/special", echo_b.url)])

    general = await gateway.client.get("/api/shop/items/1")
    special = await gateway.client.get("/api/shop/special/offer")
    exact = await gateway.client.get("/api/shop/special")

    assert general.json()["service"] == "a"
    assert special.json()["service"] == "b"
    assert exact.json()["service"] == "b"
    # services serve their paths without the public /api prefix
    assert special.json()["path"] == "/shop/special/offer"


async def test_a_prefix_matches_whole_segments_only(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/shop", echo_a.url)])

    response = await gateway.client.get("/api/shopadmin")

    assert response.status_code == 404
    assert response.json()["code"] == "route_not_found"
    assert echo_a.hits["/shopadmin"] == 0


async def test_unrouted_paths_get_404_in_the_error_model(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/shop", echo_a.url)])

    for path in ("/api/nowhere", "/api", "/elsewhere"):
        response = await gateway.client.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"code", "message", "details"}


async def test_a_method_the_route_does_not_allow_gets_405_with_allow(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/catalog", echo_a.url, methods=["GET"])])

    refused = await gateway.client.delete("/api/catalog/7")
    head = await gateway.client.head("/api/catalog/7")

    assert refused.status_code == 405
    assert refused.json()["code"] == "method_not_allowed"
    assert refused.headers["allow"] == "GET, HEAD"
    assert echo_a.hits["/catalog/7"] == 1  # only the HEAD went through
    assert head.status_code == 200
    assert head.content == b""


async def test_query_body_and_encoded_path_reach_the_service_unchanged(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/files", echo_a.url)])

    response = await gateway.client.post(
        "/api/files/a%2Fb/caf%C3%A9?q=red+shoes&page=2&tag=a&tag=b", content=b"x" * 1000,
        headers={"content-type": "text/plain", "x-custom": "kept"})

    seen = response.json()
    assert response.status_code == 200
    assert seen["raw_path"] == "/files/a%2Fb/caf%C3%A9"
    assert seen["query"] == "q=red+shoes&page=2&tag=a&tag=b"
    assert seen["method"] == "POST"
    assert seen["body_length"] == 1000
    headers = dict(seen["headers"])
    assert headers["x-custom"] == "kept"
    assert headers["content-type"] == "text/plain"


async def test_the_public_prefix_is_stripped_on_segment_boundaries(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/shop", echo_a.url)])

    plain = await gateway.client.get("/api/shop/1")
    encoded_status, encoded = await raw_get(gateway.url, "/%61pi/shop/2")
    glued_status, glued = await raw_get(gateway.url, "/api%2Fshop/3")

    assert plain.json()["path"] == "/shop/1"
    assert ["x-forwarded-prefix", "/api"] in plain.json()["headers"]
    assert encoded_status == 200
    assert orjson.loads(encoded)["path"] == "/shop/2"
    assert glued_status == 400
    assert orjson.loads(glued)["code"] == "invalid_path"


async def test_without_a_prefix_to_strip_paths_go_on_unchanged(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/shop", echo_a.url)], strip_path_prefix="")

    response = await gateway.client.get("/api/shop/1")

    assert response.json()["path"] == "/api/shop/1"
    assert "x-forwarded-prefix" not in dict(response.json()["headers"])


async def test_dot_segments_are_refused_before_routing(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/open", echo_a.url),
                                   route("/api/private", echo_a.url, auth=True)])

    for target in ("/api/open/../private/me", "/api/open/%2e%2e/private/me",
                   "/api/open/%2E%2E%2Fprivate%2Fme", "/api/open/./x"):
        status, body = await raw_get(gateway.url, target)
        assert status == 400, target
        assert orjson.loads(body)["code"] == "invalid_path"
    assert echo_a.hits["/private/me"] == 0


async def test_hop_by_hop_headers_stay_on_their_own_hop(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/open", echo_a.url)])

    response = await gateway.client.get(
        "/api/open/hops", headers={"connection": "keep-alive, x-hop-only", "x-hop-only": "1",
                                   "te": "trailers", "keep-alive": "timeout=5",
                                   "x-end-to-end": "1"})

    names = {name for name, _ in response.json()["headers"]}
    assert "x-end-to-end" in names
    assert not names & {"x-hop-only", "te", "keep-alive", "upgrade"}
    # the service named x-private-hop in its Connection header: it stops at the gateway
    assert "x-private-hop" not in response.headers
    assert response.headers["x-served-by"] == "a"


async def test_the_service_learns_the_client_address_and_scheme_from_the_gateway_only(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/open", echo_a.url)])

    response = await gateway.client.get("/api/open/who",
                                        headers={"x-real-ip": "6.6.6.6", "forwarded": "for=x"})

    headers = response.json()["headers"]
    assert ["x-forwarded-proto", "http"] in headers
    assert dict(headers)["x-forwarded-host"] == gateway.url.removeprefix("http://")
    assert [value for name, value in headers if name == "x-forwarded-for"] == ["127.0.0.1"]
    assert "x-real-ip" not in dict(headers)
    assert "forwarded" not in dict(headers)


async def test_request_ids_follow_the_request_to_the_service(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/open", echo_a.url)])

    given = await gateway.client.get("/api/open/id", headers={"x-request-id": "shopper-42"})
    made = await gateway.client.get("/api/open/id")

    assert [v for k, v in given.json()["headers"] if k == "x-request-id"] == ["shopper-42"]
    assert given.headers.get_list("x-request-id") == ["shopper-42"]
    generated = made.headers["x-request-id"]
    assert [v for k, v in made.json()["headers"] if k == "x-request-id"] == [generated]


async def test_request_metrics_are_labelled_by_route_prefix(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/metered", echo_a.url, methods=["GET"])])

    await gateway.client.get("/api/metered/1")
    await gateway.client.get("/api/metered/2")
    await gateway.client.post("/api/metered/3")
    text = (await gateway.client.get("/metrics")).text

    assert ('http_requests_total{method="GET",route="/api/metered",status_code="200"} 2.0'
            in text)
    assert ('http_requests_total{method="POST",route="/api/metered",status_code="405"} 1.0'
            in text)
