"""Forwarding one request to its service and streaming the answer back.

Bodies are streamed both ways: a large upload or download passes through in chunks and the
gateway's memory stays flat. The call goes through the core's breaker-guarded client, so a
failing service is cut off the same way it is for every other caller (503 while the
breaker is open, 504 when it does not answer in time), and a service that cannot be
reached at all is a 502, the gateway's own word for "the service behind me failed".

Headers are cleaned on the way in and out: hop-by-hop headers (RFC 9110 §7.6.1) belong to
one connection and are dropped; identity headers a client sends are dropped because only
the gateway may assert who is calling; the request id and X-Forwarded-* are the gateway's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from urllib.parse import unquote

import anyio
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.core.auth import USER_ID_HEADER, USER_ROLES_HEADER
from services.core.errors import DomainError, InvalidRequest
from services.core.http import ServiceClient, UpstreamUnavailable
from services.core.logging import REQUEST_ID_HEADER
from services.gateway.service import Caller

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Set by the gateway alone; whatever a client sends under these names is dropped.
_GATEWAY_OWNED_REQUEST = frozenset({
    b"host", b"expect", USER_ID_HEADER.encode(), USER_ROLES_HEADER.encode(),
    REQUEST_ID_HEADER.encode(), b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"x-forwarded-prefix", b"x-real-ip", b"forwarded",
})
# The gateway's server stamps its own; the service's copies would be duplicates.
_GATEWAY_OWNED_RESPONSE = frozenset({b"date", b"server", REQUEST_ID_HEADER.encode()})


class BadGateway(DomainError):
    status_code, code = 502, "upstream_unreachable"


class PayloadTooLarge(DomainError):
    status_code, code = 413, "payload_too_large"


class UpstreamBodyInterrupted(Exception):
    """The service broke off a response whose headers were already sent; the only honest
    thing left is to abort the client's connection too, so it sees a truncated body."""


def _connection_tokens(headers: Headers) -> set[bytes]:
    """Headers named in ``Connection`` are hop-by-hop as well."""
    return {token.strip().lower() for name, value in headers if name.lower() == b"connection"
            for token in value.split(b",") if token.strip()}


def _sendable(value: bytes) -> bool:
    """Whether the HTTP client can put ``value`` on the wire. A value the front server let
    through but the client refuses would surface as a transport error, i.e. a 502 counted
    against the service's breaker: one client could trip it for everyone."""
    return not any(byte in value for byte in b"\x00\r\n")


def upstream_request_headers(headers: Headers, caller: Caller, *, scheme: str,
                             prefix: str) -> Headers:
    """The client's headers as the service should see them (``prefix``: the path prefix
    the gateway strips, so a service can still build public links)."""
    dropped = HOP_BY_HOP | _GATEWAY_OWNED_REQUEST | _connection_tokens(headers)
    kept = [(name.lower(), value.strip(b" \t")) for name, value in headers
            if name.lower() not in dropped and _sendable(value)]
    host = next((value for name, value in headers if name.lower() == b"host"), None)
    if not any(name == b"accept-encoding" for name, _ in kept):
        # Bodies are relayed as they arrive; without this the HTTP client would ask for gzip
        # and hand a compressed body to a client that never said it could read one.
        kept.append((b"accept-encoding", b"identity"))
    kept.append((b"x-forwarded-for", caller.address.encode("latin-1", errors="replace")))
    kept.append((b"x-forwarded-proto", scheme.encode("latin-1", errors="replace")))
    if host is not None:
        kept.append((b"x-forwarded-host", host))
    if prefix:
        kept.append((b"x-forwarded-prefix", prefix.encode()))
    kept = [(name, value) for name, value in kept if _sendable(value)]
    if caller.user_id is not None:
        kept.append((USER_ID_HEADER.encode(), caller.user_id.encode()))
        kept.append((USER_ROLES_HEADER.encode(), ",".join(caller.roles).encode()))
    return kept


def client_response_headers(upstream: httpx.Response, *, strip_cors: bool,
                            extra: dict[str, str]) -> Headers:
    """The service's response headers as the client should see them."""
    raw = upstream.headers.raw
    dropped = HOP_BY_HOP | _GATEWAY_OWNED_RESPONSE | _connection_tokens(raw)
    kept = [(name.lower(), value) for name, value in raw
            if name.lower() not in dropped
            # CORS is the gateway's decision; a service's own answer would contradict it.
            and not (strip_cors and name.lower().startswith(b"access-control-"))]
    kept.extend((name.lower().encode(), value.encode()) for name, value in extra.items())
    return kept


def upstream_target(scope: Scope, strip_prefix: str) -> str:
    """The path and query as the client wrote them (percent-encoding intact, so a ``%2F``
    stays inside its segment) less ``strip_prefix``, with any byte outside printable ASCII
    encoded."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw_path.split(b"?", 1)[0]  # some servers leave the query on raw_path
    if strip_prefix:
        raw_path = _strip_segments(raw_path, strip_prefix)
    target = _printable(raw_path)
    if query := scope.get("query_string", b""):
        target += "?" + _printable(query)
    return target


def _strip_segments(raw_path: bytes, prefix: str) -> bytes:
    """``raw_path`` without the leading segments that spell ``prefix``.

    Routing matched the decoded path, so the segments are compared decoded (``/%61pi`` is
    ``/api``); a prefix that only appears once ``%2F`` is decoded (``/api%2Fproducts``)
    has no segment boundary to cut at and is refused."""
    wanted = prefix.strip("/").split("/")
    segments = raw_path.split(b"/")[1:]
    head = [unquote(segment.decode("latin-1")) for segment in segments[:len(wanted)]]
    if head != wanted:
        raise InvalidRequest(f"the path must start with {prefix}/", code="invalid_path")
    return b"/" + b"/".join(segments[len(wanted):])


def _printable(raw: bytes) -> str:
    return "".join(chr(byte) if 0x21 <= byte <= 0x7E else f"%{byte:02X}" for byte in raw)


def request_body(request: Request, max_bytes: int) -> AsyncIterator[bytes] | None:
    """The client's body as a stream, or None when it sent none; 413 past ``max_bytes``."""
    length = request.headers.get("content-length")
    if length is None and "transfer-encoding" not in request.headers:
        return None
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise InvalidRequest("Content-Length must be a number",
                                 code="invalid_content_length") from None
        if declared > max_bytes:
            raise _too_large(max_bytes)

    async def stream() -> AsyncIterator[bytes]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            if chunk:
                yield chunk

    return stream()


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {max_bytes} bytes",
                           details={"max_bytes": max_bytes})


async def send_upstream(client: ServiceClient, method: str, target: str, headers: Headers,
                        body: AsyncIterator[bytes] | None, *,
                        timeout_seconds: float | None = None,
                        ) -> tuple[httpx.Response, Callable[[], Awaitable[None]]]:
    """Send the request and return the response with its body unread, and the function
    that releases it. 502 when the service cannot be reached; the core client's 503
    (breaker open) and 504 (no answer in time: the route's timeout, else the breaker's)
    pass as they are."""
    stack = AsyncExitStack()
    try:
        response = await stack.enter_async_context(
            client.stream(method, target, headers=headers, content=body,
                          timeout_seconds=timeout_seconds))
    except UpstreamUnavailable as exc:
        await stack.aclose()
        raise BadGateway(f"{client.target} cannot be reached", details=exc.details) from exc
    except BaseException:
        await stack.aclose()
        raise
    return response, stack.aclose


class ProxiedResponse(StreamingResponse):
    """The service's response, relayed chunk by chunk as it arrives.

    Starlette stops the relay when the client goes away; the upstream response is released
    in every case (finished, failed, disconnected), so no pooled connection leaks."""

    def __init__(self, upstream: httpx.Response, headers: Headers,
                 release: Callable[[], Awaitable[None]], service: str) -> None:
        super().__init__(_relay(upstream, service), status_code=upstream.status_code)
        self.raw_headers = headers
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            log.info("client went away during the response")
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()


async def _relay(upstream: httpx.Response, service: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("%s broke off its response: %r", service, exc, extra={"target": service})
        raise UpstreamBodyInterrupted(f"{service} broke off its response") from exc
