"""Where a rollout's pre-promotion checks may send requests: the rollout's own namespace's
Services, or what the operator's allowlist names; everything else is refused unsent. And
what comes back into the rollout's status is a status code or an error's name, never a body.

The HTTP servers here are real ones on loopback that count what reaches them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from operators.bluegreen.check_urls import (
    REFUSED_REASON,
    AllowedPrefix,
    CheckUrlPolicy,
    RefusedCheckUrl,
    parse_allowlist,
)
from operators.bluegreen.checks import PreviewEndpoint, run_checks
from operators.bluegreen.decide import CheckRequest
from operators.bluegreen.spec import Color, PrePromotionChecks

from .test_bluegreen_checks import Preview, preview  # noqa: F401  (the fixture)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
ENDPOINT = PreviewEndpoint("shop", "shop-ns", 80)
REQUEST = CheckRequest("green=shop:2@1/", Color.GREEN, None)

SERVICES: dict[str, Mapping[str, Any]] = {
    "smoke": {"spec": {"type": "ClusterIP", "ports": [{"port": 8080}, {"port": 80}]}},
    "alias": {"spec": {"type": "ExternalName", "externalName": "metadata.example",
                       "ports": [{"port": 80}]}},
}


def _in_shop_ns(allowlist: str = "") -> CheckUrlPolicy:
    return CheckUrlPolicy("shop-ns", parse_allowlist(allowlist), SERVICES.get)


@pytest.mark.parametrize(("url", "requested"), [
    ("http://smoke:8080/ready", "http://smoke.shop-ns.svc.cluster.local:8080/ready"),
    ("http://smoke/ready?deep=1", "http://smoke.shop-ns.svc.cluster.local:80/ready?deep=1"),
    ("http://smoke.shop-ns.svc:8080/metrics",
     "http://smoke.shop-ns.svc.cluster.local:8080/metrics"),
    ("http://SMOKE.shop-ns.svc.cluster.local.:8080",
     "http://smoke.shop-ns.svc.cluster.local:8080/"),
])
def test_a_service_of_the_rollouts_namespace_is_requested_by_its_full_name(
        url: str, requested: str) -> None:
    assert _in_shop_ns().resolve(url) == requested


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:8000/ready", "not a Service of the rollout's namespace"),
    ("http://169.254.169.254/latest/meta-data/", "not a Service of the rollout's namespace"),
    ("http://[::1]:8000/", "not a Service of the rollout's namespace"),
    ("https://kubernetes.default.svc/api", "names namespace default"),
    ("http://smoke.other.svc.cluster.local:8080/", "names namespace other"),
    ("http://example.com/", "not a Service of the rollout's namespace"),
    ("http://missing:80/", "no Service missing in namespace shop-ns"),
    ("http://alias/", "ExternalName"),
    ("http://smoke:9090/", "does not serve port 9090 (its ports: 80, 8080)"),
    ("http://smoke@127.0.0.1:8000/", "credentials"),
    ("http://smoke:8080@127.0.0.1:8000/", "credentials"),
    ("ftp://smoke/", "only http and https"),
])
def test_anything_else_is_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(RefusedCheckUrl) as refused:
        _in_shop_ns().resolve(url)
    message = str(refused.value)
    assert why in message and url in message and "no request was sent" in message
    assert "KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST" in message


def test_the_allowlist_covers_exactly_its_host_port_and_path() -> None:
    policy = _in_shop_ns("127.0.0.1:8001, https://smoke.example:8443/health/")
    assert policy.resolve("http://127.0.0.1:8001/anything") == "http://127.0.0.1:8001/anything"
    assert policy.resolve("https://127.0.0.1:8001/") == "https://127.0.0.1:8001/"
    assert policy.resolve("https://smoke.example:8443/health/live") == \
        "https://smoke.example:8443/health/live"
    for outside in ("http://127.0.0.1:8002/", "http://127.0.0.2:8001/",
                    "http://127.0.0.1.example:8001/", "http://localhost:8001/",
                    "http://smoke.example:8443/health/live",  # scheme differs
                    "https://smoke.example:8443/healthz", "https://smoke.example/health/"):
        with pytest.raises(RefusedCheckUrl):
            policy.resolve(outside)


def test_a_url_prefix_without_a_port_means_the_schemes_default_port() -> None:
    (entry,) = parse_allowlist("http://checks.internal/smoke")
    assert entry == AllowedPrefix("checks.internal", 80, "http", "/smoke")
    policy = CheckUrlPolicy("shop-ns", (entry,))
    assert policy.resolve("http://checks.internal/smoke?x=1")
    with pytest.raises(RefusedCheckUrl):
        policy.resolve("http://checks.internal/smokes")


@pytest.mark.parametrize("entry", ["127.0.0.1", "http://user@host:80/", "host:port",
                                   "ftp://host:21/", "127.0.0.1:99999"])
def test_a_malformed_allowlist_entry_is_an_error_naming_it(entry: str) -> None:
    with pytest.raises(ValueError, match="KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST"):
        parse_allowlist(f"127.0.0.1:8000,{entry}")


def test_a_refused_url_fails_the_round_before_any_request(preview: Preview) -> None:  # noqa: F811
    # The HTTP check's url is allowed, the error-rate url is not: neither is requested.
    port = preview.url.rsplit(":", 1)[1]
    checks = PrePromotionChecks.model_validate({
        "http": [{"url": f"{preview.url}/ready"}],
        "errorRate": {"url": f"http://127.0.0.1:{int(port) + 1}/metrics", "sampleSeconds": 0}})
    policy = CheckUrlPolicy("shop-ns", parse_allowlist(f"127.0.0.1:{port}"))
    report = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=policy)
    assert report.passed is False and report.reason == REFUSED_REASON
    assert "refused" in report.message and preview.hits == 0


def test_without_an_allowlist_a_loopback_check_is_never_sent(preview: Preview) -> None:  # noqa: F811
    checks = PrePromotionChecks.model_validate({"http": [{"url": f"{preview.url}/ready"}]})
    report = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=CheckUrlPolicy("shop-ns"))
    assert report.passed is False and report.reason == REFUSED_REASON
    assert preview.hits == 0


SECRET = "s3cr3t-token-from-the-body"


def test_a_metrics_body_that_is_not_prometheus_text_is_not_quoted(preview: Preview) -> None:  # noqa: F811
    preview.metrics = f"{SECRET} is what this endpoint really serves\n"
    checks = PrePromotionChecks.model_validate(
        {"errorRate": {"url": f"{preview.url}/metrics", "sampleSeconds": 0}})
    policy = CheckUrlPolicy("shop-ns", parse_allowlist(preview.url.removeprefix("http://")))
    report = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=policy)
    assert report.passed is False and "not Prometheus text" in report.message
    assert SECRET not in report.message


def test_a_failed_metrics_read_reports_the_status_only(preview: Preview) -> None:  # noqa: F811
    checks = PrePromotionChecks.model_validate(
        {"errorRate": {"url": f"{preview.url}/not-metrics", "sampleSeconds": 0}})
    policy = CheckUrlPolicy("shop-ns", parse_allowlist(preview.url.removeprefix("http://")))
    preview.status = 404
    report = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=policy)
    assert report.passed is False
    assert report.message.endswith("/not-metrics: answered 404")


@pytest.fixture
def banner() -> Iterator[int]:
    """A TCP server that is not an HTTP server: it sends a banner, like SSH or SMTP."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(f"SSH-2.0-{SECRET}\r\n".encode())
                connection.recv(4096)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_what_a_non_http_server_sends_is_not_quoted(banner: int) -> None:
    checks = PrePromotionChecks.model_validate({
        "http": [{"url": f"http://127.0.0.1:{banner}/ready", "attempts": 1,
                  "timeoutSeconds": 2}]})
    policy = CheckUrlPolicy("shop-ns", parse_allowlist(f"127.0.0.1:{banner}"))
    report = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=policy)
    assert report.passed is False and "RemoteProtocolError" in report.message
    assert SECRET not in report.message
    checks = PrePromotionChecks.model_validate(
        {"errorRate": {"url": f"http://127.0.0.1:{banner}/metrics", "sampleSeconds": 0}})
    report = run_checks(checks, REQUEST, ENDPOINT, NOW, policy=policy)
    assert report.passed is False and SECRET not in report.message
