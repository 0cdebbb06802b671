"""The access line's fast path writes exactly what the logging machinery would, and steps
aside whenever anything else listens (a test's log capture, a filter, another handler)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from services.core.logging import (
    BatchingStreamHandler,
    JsonFormatter,
    access_log,
    bind_request_id,
    log_access,
    reset_request_id,
)


@pytest.fixture
def alone() -> Iterator[tuple[BatchingStreamHandler, io.StringIO]]:
    """Logging as ``configure_logging`` leaves it: our JSON handler alone on the root."""
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter("probe"))
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO
    try:
        yield handler, stream
    finally:
        root.handlers, root.level = saved, saved_level
        handler.close()


def _lines(handler: BatchingStreamHandler, stream: io.StringIO) -> list[dict[str, object]]:
    handler.flush()
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


class _Counting(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen += 1
        return True


def test_the_fast_line_equals_the_one_logging_writes(alone: tuple[BatchingStreamHandler,
                                                                  io.StringIO]) -> None:
    handler, stream = alone
    token = bind_request_id("req-1")
    try:
        log_access("GET", "/products/1", 200, 0.00123)  # fast path
        listener = _Counting()
        access_log.addFilter(listener)  # someone listens: the ordinary route
        try:
            log_access("GET", "/products/1", 200, 0.00123)
        finally:
            access_log.removeFilter(listener)
    finally:
        reset_request_id(token)
    fast, ordinary = _lines(handler, stream)
    assert listener.seen == 1  # the second line went through logging, the first did not
    assert {**fast, "ts": None} == {**ordinary, "ts": None}
    assert list(fast) == list(ordinary)  # same keys in the same order
    assert fast | {"ts": None} == {
        "ts": None, "level": "INFO", "logger": "kommerce.access", "service": "probe",
        "message": "GET /products/1 200", "request_id": "req-1", "method": "GET",
        "path": "/products/1", "status": 200, "duration_ms": 1.23}


def test_quiet_paths_stay_quiet_at_info(alone: tuple[BatchingStreamHandler,
                                                     io.StringIO]) -> None:
    handler, stream = alone
    log_access("GET", "/health", 200, 0.001)
    assert _lines(handler, stream) == []


def test_a_log_capture_sees_every_access_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kommerce.access"):
        log_access("POST", "/orders", 201, 0.01)
    assert [r.getMessage() for r in caplog.records if r.name == "kommerce.access"] == [
        "POST /orders 201"]
