"""Structured JSON logs, each line carrying the request id of the request that caused it.

The request id comes from the caller's ``X-Request-Id`` (so one id follows a request
through the gateway and every service it touches) or is generated, and is echoed in the
response. It lives in a context variable, so any logger anywhere in the request's task
stamps it without being handed it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_request_id: ContextVar[str | None] = ContextVar("kommerce_request_id", default=None)
# A caller-supplied id is logged verbatim, so only accept something that cannot forge lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)

access_log = logging.getLogger("kommerce.access")
_HANDLER_NAME = "kommerce"
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str | None) -> None:
    """Set the request id for the current task (event consumers use the event id)."""
    _request_id.set(request_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        if (request_id := _request_id.get()) is not None:
            entry["request_id"] = request_id
        entry.update(_trace_fields())
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _trace_fields() -> dict[str, str]:
    from opentelemetry import trace  # cheap after first import

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through one handler on stderr.

    Calling it again replaces our handler only; handlers others installed (pytest's log
    capture) stay.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(service) if json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our own access log replaces uvicorn's, which is neither JSON nor carries the request id.
    logging.getLogger("uvicorn.access").disabled = True


class RequestContextMiddleware:
    """Assigns the request id, echoes it, and writes one access-log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Leave the id set: the server-error handler outside us answers the 500 and
            # quotes it (each request runs in its own task, so nothing leaks).
            self._log(scope, status, started)
            raise
        self._log(scope, status, started)
        _request_id.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        # Probes and scrapes arrive every few seconds; they would drown the real traffic.
        level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
        access_log.log(
            level, "%s %s %s", scope["method"], scope["path"], status,
            extra={"method": scope["method"], "path": scope["path"], "status": status,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
        )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SAFE_ID.match(text) else None
    return None
