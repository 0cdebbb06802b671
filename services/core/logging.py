"""Structured JSON logs, each line carrying the request id of the request that caused it.

The request id comes from the caller's ``X-Request-Id`` (so one id follows a request
through the gateway and every service it touches) or is generated, and is echoed in the
response (:mod:`services.core.middleware` does both). It lives in a context variable, so
any logger anywhere in the request's task stamps it without being handed it.

No line carries a card number: a shopper can put one in a URL path or query string (the
access line, the HTTP client's request lines) or in any value an error message quotes, so
the formatters mask them (:func:`services.core.pci.mask_card_numbers`) in every line, not
only in the fields we think of as user input.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from services.core.pci import find_pans, mask_card_numbers

REQUEST_ID_HEADER = "x-request-id"
_request_id: ContextVar[str | None] = ContextVar("kommerce_request_id", default=None)
# A caller-supplied id is logged verbatim, so only accept something that cannot forge lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)

ACCESS_LOGGER = "kommerce.access"
access_log = logging.getLogger(ACCESS_LOGGER)
_HANDLER_NAME = "kommerce"
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Set the request id for the current task (event consumers use the event id); the
    token puts back the previous one (:func:`reset_request_id`)."""
    return _request_id.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields become top-level keys.

    It runs for every access line, so it avoids repeated work: the timestamp's date and
    time are formatted once a second, and the active span is looked up only once tracing
    has been set up in the process.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {}
        if extra := record.__dict__.keys() - _STANDARD_ATTRS:
            for key, value in record.__dict__.items():  # in the order they were given
                if key in extra and not key.startswith("_"):
                    fields[key] = value
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         fields)

    def line(self, created: float, level: str, logger: str, message: str,
             fields: dict[str, Any]) -> str:
        """The JSON line for one entry; :func:`log_access` calls it without a record."""
        entry: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": level,
            "logger": logger,
            "service": self.service,
            "message": message,
        }
        if (request_id := _request_id.get()) is not None:
            entry["request_id"] = request_id
        if _trace_fields_wanted:
            entry.update(_trace_fields())
        entry.update(fields)
        line = orjson.dumps(entry, default=str).decode()
        return _without_card_numbers(line) if find_pans(line) else line

    def _timestamp(self, created: float) -> str:
        """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``."""
        second = int(created)
        micros = round((created - second) * 1_000_000)  # as datetime rounds it
        if micros >= 1_000_000:  # rounds up into the next second: rare, do it the long way
            return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{micros // 1000:03d}+00:00"


def _without_card_numbers(line: str) -> str:
    """The JSON line with card numbers masked value by value (masking the line's text
    could cut through JSON syntax: a number value would become bare text)."""
    return orjson.dumps(_masked(orjson.loads(line))).decode()


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_card_numbers(value)
    if isinstance(value, dict):
        return {mask_card_numbers(key): _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and find_pans(str(value)):
        return mask_card_numbers(str(value))
    return value


class PlainFormatter(logging.Formatter):
    """``asctime level logger: message`` for a terminal, card numbers masked like the JSON
    lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask_card_numbers(super().format(record))


# Set once a tracer provider exists in the process; until then no span can be active, and
# asking OpenTelemetry for the current span on every line would be wasted work.
_trace_fields_wanted = False


def want_trace_fields() -> None:
    """Make log lines carry ``trace_id``/``span_id`` of the active span (tracing calls it)."""
    global _trace_fields_wanted
    _trace_fields_wanted = True


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
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(service) if json else PlainFormatter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our own access log replaces uvicorn's, which is neither JSON nor carries the request id.
    logging.getLogger("uvicorn.access").disabled = True
    # No line carries thread or process names (one service is one process, and the access
    # log writes a line per request), so records need not look them up.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes lines in batches instead of one write per line.

    With an access line per request, a ``write`` + ``flush`` per line was a system call per
    request, as much as the rest of a cached read. Access lines below WARNING are collected
    and written when ``flush_interval`` has passed (a daemon thread makes sure of that when
    traffic stops) or ``max_bytes`` are waiting; any other line is written at once, after
    the ones waiting, so order holds and nothing but access lines is ever held back (a
    process killed by a signal after its last "stopping" line loses none of them).
    ``close()`` (and so ``logging.shutdown()`` at exit) writes what is left.
    """

    def __init__(self, stream: Any = None, *, flush_interval: float = 0.2,
                 max_bytes: int = 64 * 1024) -> None:
        super().__init__(stream)
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._wake = threading.Event()
        self._closed = False
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # Handler.handle() holds self.lock around emit().
        self._enqueue(line, batch=record.name == ACCESS_LOGGER
                      and record.levelno < logging.WARNING)

    def emit_access_line(self, line: str) -> None:
        """An access line formatted by :func:`log_access` itself (the fast path)."""
        with self.lock:  # type: ignore[union-attr]  # Optional in typeshed; Handler() always sets it
            self._enqueue(line + self.terminator, batch=True)

    def _enqueue(self, line: str, *, batch: bool) -> None:
        self._pending.append(line)
        self._pending_bytes += len(line)
        if not batch or self._pending_bytes >= self.max_bytes or self._closed:
            self._write_pending()
        elif self._writer is None:
            self._writer = threading.Thread(target=self._write_periodically,
                                            name="log-writer", daemon=True)
            self._writer.start()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stream must not break the caller
            pass

    def _write_periodically(self) -> None:
        while not self._wake.wait(self.flush_interval):
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # Optional in typeshed; Handler() always sets it
            self._write_pending()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()


def safe_request_id(text: str) -> str | None:
    """``text`` if it can be logged verbatim (it cannot forge a line), else None."""
    return text if _SAFE_ID.match(text) else None


def log_access(method: str, path: str, status: int, seconds: float) -> None:
    """The access line for one request: one per request, so when logging is as
    :func:`configure_logging` left it (our JSON handler alone on the root logger, nothing
    attached on the way) the line is formatted and queued here directly, byte for byte what
    the logging machinery would write, without building a ``LogRecord`` for it. Any other
    set-up (a test's log capture, a handler or filter someone added) takes the ordinary
    route, so nothing that listens misses a line."""
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    duration_ms = round(seconds * 1000, 2)
    fields = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
    handler = _only_handler()
    if handler is None or level < handler.level:
        # Whatever listens here may not be our formatter, which masks card numbers.
        path = fields["path"] = mask_card_numbers(path)
        # makeRecord + handle is what Logger.log does, less finding the caller's file and
        # line by walking the stack (no line of ours prints them).
        access_log.handle(access_log.makeRecord(
            ACCESS_LOGGER, level, "", 0, "%s %s %s", (method, path, status), None,
            extra=fields))
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    handler.emit_access_line(formatter.line(time.time(), logging.getLevelName(level),
                                            ACCESS_LOGGER, f"{method} {path} {status}",
                                            fields))


def _only_handler() -> BatchingStreamHandler | None:
    """Our JSON handler, if it is the only thing an access line would reach."""
    root = logging.getLogger()
    if len(root.handlers) != 1 or root.filters or access_log.handlers or access_log.filters \
            or not access_log.propagate or access_log.disabled:
        return None
    handler = root.handlers[0]
    if type(handler) is not BatchingStreamHandler or handler.filters \
            or type(handler.formatter) is not JsonFormatter:
        return None
    parent = access_log.parent
    while parent is not None and parent is not root:
        if parent.handlers or parent.filters or not parent.propagate:
            return None
        parent = parent.parent
    return handler
