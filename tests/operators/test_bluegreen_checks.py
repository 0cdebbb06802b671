"""Pre-promotion checks: Prometheus text parsing, the error-rate verdict, and the HTTP and
metrics requests against a real HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from operators.bluegreen.check_urls import CheckUrlPolicy, parse_allowlist
from operators.bluegreen.checks import (
    PreviewEndpoint,
    error_rate_verdict,
    parse_error_counts,
    run_checks,
)
from operators.bluegreen.decide import CheckRequest
from operators.bluegreen.spec import Color, ErrorRateCheck, ErrorSample, PrePromotionChecks

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
METRICS = """\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="GET",status_code="200"} 90.0
http_requests_total{method="GET",status_code="503"} 4.0
http_requests_total{method="POST",status_code="500"} 1.0
http_requests_total{method="POST",status_code="404"} 5.0
http_requests_created{method="GET",status_code="200"} 1.7e9
# TYPE other_total counter
other_total{status_code="500"} 1000.0
"""


def test_error_counts_sum_every_series_and_count_5xx_as_errors() -> None:
    assert parse_error_counts(METRICS, "http_requests_total", "status_code") == (100.0, 5.0)
    assert parse_error_counts(METRICS, "http_requests", "status_code") == (100.0, 5.0)


def test_error_rate_over_a_window_uses_the_difference_of_two_scrapes() -> None:
    check = ErrorRateCheck(max_error_percent=1.0)
    first = ErrorSample(time=NOW, requests=100, errors=5)
    ok, message = error_rate_verdict(check, first, ErrorSample(
        time=NOW + timedelta(seconds=30), requests=300, errors=6))
    assert ok and "0.50% of 200 requests" in message and "over 30s" in message
    ok, message = error_rate_verdict(check, first, ErrorSample(
        time=NOW + timedelta(seconds=30), requests=300, errors=25))
    assert not ok and "10.00%" in message


def test_too_little_traffic_passes_and_a_restarted_pod_fails() -> None:
    check = ErrorRateCheck(min_requests=50)
    ok, message = error_rate_verdict(check, None, ErrorSample(time=NOW, requests=10, errors=10))
    assert ok and "fewer than minRequests 50" in message
    ok, message = error_rate_verdict(check, ErrorSample(time=NOW, requests=100, errors=0),
                                     ErrorSample(time=NOW, requests=3, errors=0))
    assert not ok and "restarted" in message


@dataclass
class Preview:
    """A stand-in preview colour: answers /ready with ``status`` and serves ``metrics``."""

    status: int = 200
    metrics: str = METRICS
    hits: int = 0
    url: str = ""


@pytest.fixture
def preview() -> Iterator[Preview]:
    state = Preview()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            status, body = ((200, state.metrics) if self.path == "/metrics"
                            else (state.status, "ok"))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


ENDPOINT = PreviewEndpoint("shop", "ns", 80)
REQUEST = CheckRequest("green=shop:2@1/", Color.GREEN, None)


def _allowing(preview: Preview) -> CheckUrlPolicy:
    """The rollout's namespace has no Services here; the stand-in is allowlisted."""
    return CheckUrlPolicy("ns", parse_allowlist(preview.url.removeprefix("http://")))


def _checks(preview: Preview, **error_rate: object) -> PrePromotionChecks:
    return PrePromotionChecks.model_validate({
        "http": [{"url": f"{preview.url}/ready", "attempts": 3}],
        "errorRate": {"url": f"{preview.url}/metrics", **error_rate},
    })


def test_the_preview_service_is_the_default_target() -> None:
    assert ENDPOINT.url("/ready") == "http://shop-preview.ns.svc.cluster.local:80/ready"


def test_every_http_attempt_must_pass(preview: Preview) -> None:
    preview.status = 503
    report = run_checks(_checks(preview, maxErrorPercent=10), REQUEST, ENDPOINT, NOW,
                        policy=_allowing(preview))
    assert report.passed is False
    assert "answered 503 (expected 200) on attempt 1 of 3" in report.message
    preview.status = 200
    report = run_checks(_checks(preview, maxErrorPercent=10, sampleSeconds=0), REQUEST,
                        ENDPOINT, NOW, policy=_allowing(preview))
    assert report.passed is True, report.message
    assert preview.hits == 1 + 3 + 1


def test_an_error_rate_above_the_ceiling_fails(preview: Preview) -> None:
    report = run_checks(_checks(preview, maxErrorPercent=1, sampleSeconds=0), REQUEST,
                        ENDPOINT, NOW, policy=_allowing(preview))
    assert report.passed is False and "5.00% of 100 requests" in report.message


def test_a_sampling_window_takes_a_baseline_then_judges_the_difference(
        preview: Preview) -> None:
    checks = _checks(preview, maxErrorPercent=1, sampleSeconds=30)
    first = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=_allowing(preview))
    assert first.passed is None and first.baseline is not None
    assert first.baseline.requests == 100
    waiting = CheckRequest(REQUEST.attempt, Color.GREEN, first.baseline)
    hits = preview.hits
    early = run_checks(checks, waiting, ENDPOINT, NOW + timedelta(seconds=10),
                       policy=_allowing(preview))
    assert early.passed is None and preview.hits == hits  # nothing to do until the window ends
    preview.metrics = METRICS.replace(' 90.0', ' 490.0')
    done = run_checks(checks, waiting, ENDPOINT, NOW + timedelta(seconds=31),
                      policy=_allowing(preview))
    assert done.passed is True and "0.00% of 400 requests" in done.message


def test_an_unreachable_preview_fails_the_check() -> None:
    checks = PrePromotionChecks.model_validate(
        {"http": [{"url": "http://127.0.0.1:9/ready", "timeoutSeconds": 1}]})
    report = run_checks(checks, REQUEST, ENDPOINT, NOW,
                        policy=CheckUrlPolicy("ns", parse_allowlist("127.0.0.1:9")))
    assert report.passed is False and "ConnectError" in report.message


def test_the_preview_pods_ready_addresses_are_read_from_the_endpoint_slices() -> None:
    from operators.bluegreen.checks import ready_addresses

    slices = [
        {"ports": [{"name": "http", "port": 8000}],
         "endpoints": [{"addresses": ["10.244.0.12"], "conditions": {"ready": True}},
                       {"addresses": ["10.244.0.11"], "conditions": {"ready": False}},
                       {"addresses": ["10.244.0.13"]}]},
        {"ports": [], "endpoints": [{"addresses": ["10.244.0.14"]}]},
    ]
    assert ready_addresses(slices) == ("10.244.0.12:8000", "10.244.0.13:8000")


def test_the_error_rate_is_summed_over_every_preview_pod(preview: Preview) -> None:
    """Counters are per Pod: read through the Service, two scrapes could land on different
    Pods; each Pod is read instead and the colour judged on the sum."""
    pod = preview.url.removeprefix("http://")
    endpoint = PreviewEndpoint("shop", "ns", 80, pods=(pod, pod))
    checks = PrePromotionChecks.model_validate(
        {"errorRate": {"maxErrorPercent": 10, "sampleSeconds": 0}})
    report = run_checks(checks, REQUEST, endpoint, NOW, policy=_allowing(preview))
    assert report.passed is True, report.message
    assert preview.hits == 2
    assert "of 200 requests" in report.message
