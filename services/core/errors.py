"""One error model for every service: ``{"code", "message", "details"}``.

Domain code raises :class:`DomainError` subclasses (no FastAPI imports needed in
``service.py``); the handlers installed by :func:`install_error_handlers` turn them, request
validation failures, HTTP errors and database errors caused by client input into that
shape. Only a bug in our own code can produce a 500, and even then the body has the same
shape and carries the request id so the log line can be found.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.core.logging import current_request_id
from services.core.pci import CARD_NUMBER_IN_TEXT
from services.core.transient import is_transient

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """What every non-2xx response of every service looks like."""

    code: str = Field(description="Stable machine-readable error code, e.g. 'not_found'.")
    message: str = Field(description="What went wrong, in words a user can act on.")
    details: Any = Field(default=None, description="Structured detail, e.g. invalid fields.")


#: For ``responses=`` in route decorators so the OpenAPI document shows the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody}
    for status in (400, 401, 403, 404, 409, 422, 429, 503)
}


class DomainError(Exception):
    """A failure the caller can understand and act on; the status comes from the class."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, details=self.details)


class InvalidRequest(DomainError):
    status_code, code = 400, "invalid_request"


class Unauthorized(DomainError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str = "authentication required", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(DomainError):
    status_code, code = 403, "forbidden"


class NotFound(DomainError):
    status_code, code = 404, "not_found"


class Conflict(DomainError):
    status_code, code = 409, "conflict"


class Unprocessable(DomainError):
    status_code, code = 422, "unprocessable"


class TooManyRequests(DomainError):
    status_code, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after_seconds: int, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(max(1, retry_after_seconds))})
        super().__init__(message, **kwargs)


class ServiceUnavailable(DomainError):
    status_code, code = 503, "service_unavailable"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "service_unavailable",
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, details=details)
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Field errors without echoing the input back (it may be a password or huge)."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


async def _on_domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    if details and all(detail["type"] == CARD_NUMBER_IN_TEXT for detail in details):
        # The one mistake a shopper can fix at once: say so in the code, not only a detail.
        return error_response(422, CARD_NUMBER_IN_TEXT, details[0]["msg"], details)
    return error_response(422, "validation_error", "the request is invalid", details)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "server_error")
    # Starlette declares a str; FastAPI's HTTPException (a subclass) carries any JSON.
    detail: object = exc.detail
    message = detail if isinstance(detail, str) else code.replace("_", " ")
    details = detail if not isinstance(detail, str) else None
    return error_response(exc.status_code, code, message, details, dict(exc.headers or {}))


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """Sort database errors by SQLSTATE class: a value PostgreSQL refused (NUL byte, number
    out of range: class 22) is the client's, a broken uniqueness or reference rule (23) a
    conflict, an outage 503; anything else is our bug."""
    assert isinstance(exc, DBAPIError)
    state = _sqlstate(exc)
    if state.startswith("22"):
        log.info("database rejected client data: %s", exc.orig)
        return error_response(422, "invalid_data", "a value in the request cannot be stored")
    if state.startswith("23"):
        log.info("integrity error reached the handler: %s", exc.orig)
        return error_response(409, "conflict", "the request conflicts with existing data")
    return await _on_unexpected(request, exc)


async def _on_unexpected(_: Request, exc: Exception) -> JSONResponse:
    request_id = current_request_id()
    if is_transient(exc):
        log.warning("a dependency is unavailable: %r", exc)
        return error_response(
            503, "dependency_unavailable", "a service dependency is unavailable; retry shortly",
            {"request_id": request_id}, headers={"Retry-After": "1"},
        )
    log.exception("unhandled error", exc_info=exc)
    return error_response(
        500, "internal_error", "an unexpected error occurred", {"request_id": request_id},
        headers={"x-request-id": request_id} if request_id else None,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
