"""Whatever a client sends, the gateway answers in its error model and never with a 5xx of
its own: the only 5xx a client may see are a service's own answers and the documented
502/503/504 about a service.

Requests are driven straight into the ASGI app, so paths and headers arrive exactly as
generated (HTTP clients would normalise them first); the service behind is real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from services.gateway.app import create_app

from .conftest import Echo, RunningGateway, StartGateway, route

pytestmark = pytest.mark.redis

UPSTREAM_STATUSES = {502: "upstream_unreachable", 503: "circuit_open",
                     504: "upstream_timeout"}

_SEGMENT_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "/?#%")
segments = st.one_of(
    st.text(alphabet=_SEGMENT_CHARS, max_size=12),
    st.sampled_from(["", ".", "..", "%2e%2e", "%2E", "%2F", "%00", "%ff", "%", "%zz",
                     "caf%C3%A9", "%C3", "fuzz", "private", "get", "limited", "api"]),
    st.binary(max_size=6).map(lambda b: "".join(f"%{x:02X}" for x in b)),
)
paths = st.builds(lambda root, first, rest: "/".join(["", root, first, *rest]),
                  st.sampled_from(["api"] * 8 + ["%61pi", "API", "api%2Ffuzz", "x"]),
                  st.sampled_from(["fuzz"] * 8 + ["fuzzy", "", "other", "FUZZ"]),
                  st.lists(segments, max_size=5))
queries = st.one_of(st.just(""), st.text(alphabet=_SEGMENT_CHARS + "/%", max_size=30)
                    .filter(lambda q: not any(k in q for k in ("sleep", "status", "stream"))))
token_names = st.from_regex(r"[!#$&'*+\-.^_`|~0-9a-z]{1,16}", fullmatch=True)
header_names = st.one_of(token_names, st.sampled_from([
    "authorization", "x-user-id", "x-user-roles", "x-request-id", "host", "connection",
    "origin", "access-control-request-method", "expect", "te", "upgrade", "cookie",
    "x-forwarded-for", "accept-encoding", "content-type", "keep-alive", "forwarded"]))
# What an HTTP/1.1 server lets into a header value: visible ASCII, obs-text, inner blanks.
header_values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c == 0x20 or c == 0x09 or (0x21 <= c <= 0xFF
                    and c != 0x7F)).strip(b" \t"))
methods = st.sampled_from(["GET"] * 4 + ["POST"] * 2 + ["HEAD", "PUT", "PATCH", "DELETE",
                                                     "OPTIONS", "TRACE", "BREW", "get"])
bodies = st.one_of(st.just(b""), st.binary(max_size=300))


@pytest.fixture
async def fuzz_app(start_gateway: StartGateway, echo_a: Echo) -> AsyncIterator[ASGIApp]:
    """A gateway app with its lifespan running; called directly, not over a socket."""
    template: RunningGateway = await start_gateway([
        route("/api/fuzz", echo_a.url),
        route("/api/fuzz/private", echo_a.url, auth=True),
        route("/api/fuzz/get", echo_a.url, methods=["GET"]),
        route("/api/fuzz/limited", echo_a.url, per_minute=1_000_000),
    ])
    app = create_app(template.settings)
    async with LifespanManager(app) as manager:
        yield manager.app


async def call(app: ASGIApp, method: str, raw_path: str, query: str,
               headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict[bytes, bytes],
                                                                         bytes]:
    """One request as a server would hand it over: path decoded from the raw path,
    framing headers consistent with the body."""
    headers = [(n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")]
    if body or method in ("POST", "PUT", "PATCH"):
        headers.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "http",
        "path": unquote(raw_path), "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    sent_body = False
    messages: list[Message] = []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), content


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=methods, raw_path=paths, query=queries,
       headers=st.lists(st.tuples(header_names.map(str.encode), header_values), max_size=8),
       body=bodies)
async def test_odd_requests_never_get_a_5xx_from_the_gateway_itself(
        fuzz_app: ASGIApp, method: str, raw_path: str, query: str,
        headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    status, response_headers, content = await call(fuzz_app, method, raw_path, query,
                                                   headers, body)

    proxied = b"x-served-by" in response_headers
    event(f"{status} {'proxied' if proxied else 'gateway'}")
    if status >= 500 and not proxied:
        assert status in UPSTREAM_STATUSES, (status, content[:300])
        assert orjson.loads(content)["code"] == UPSTREAM_STATUSES[status]
    # (A CORS preflight is answered by the core's CORS middleware in plain text.)
    preflight = method == "OPTIONS" and b"access-control-request-method" in dict(headers)
    if not proxied and method != "HEAD" and not preflight:
        assert set(orjson.loads(content)) == {"code", "message", "details"}, content[:300]
    if proxied and status == 200 and method != "HEAD":
        seen = orjson.loads(content)["headers"]
        forged = [value for name, value in seen if name in ("x-user-id", "x-user-roles")]
        assert forged == [], "a client-sent identity reached the service"
