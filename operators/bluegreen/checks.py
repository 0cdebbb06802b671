"""Pre-promotion checks against the preview colour: HTTP probes and an error-rate ceiling.

The only I/O of the rollout besides the API server. Requests go to the preview Service
(``http://<svc>-preview.<ns>.svc.cluster.local:<port><path>``) unless a check names a full
``url``: a smoke endpoint outside the mesh, an aggregated metrics endpoint, or — in the
tests and the benchmark, where Services have no real endpoints — a server on loopback that
the test controls.

HTTP checks run once at the start of an attempt; the error-rate check either reads the
counters since the Pods started (``sampleSeconds: 0``) or scrapes twice, ``sampleSeconds``
apart, with the first scrape kept in status so a restart does not lose the window.
Parsing and the verdict are pure functions; only :func:`run_checks` talks to the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from operators.bluegreen.decide import CheckReport, CheckRequest
from operators.bluegreen.render import preview_service_name
from operators.bluegreen.spec import ErrorRateCheck, ErrorSample, HttpCheck, PrePromotionChecks

MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PreviewEndpoint:
    """Where the preview colour answers inside the cluster."""

    service: str
    namespace: str
    port: int

    def url(self, path: str) -> str:
        host = f"{preview_service_name(self.service)}.{self.namespace}.svc.cluster.local"
        return f"http://{host}:{self.port}{path}"


def parse_error_counts(text: str, metric: str, status_label: str) -> tuple[float, float]:
    """(requests, 5xx answers) summed over every series of ``metric`` in Prometheus text
    format; a counter may be named with or without its ``_total`` suffix."""
    names = {metric, f"{metric}_total"}
    requests = errors = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in names:
                continue
            requests += sample.value
            if str(sample.labels.get(status_label, "")).startswith("5"):
                errors += sample.value
    return requests, errors


def error_rate_verdict(check: ErrorRateCheck, first: ErrorSample | None,
                       second: ErrorSample) -> tuple[bool, str]:
    """Pass or fail, with the numbers, for the counters between two scrapes (or since the
    Pods started when ``first`` is None)."""
    requests = second.requests - (first.requests if first else 0.0)
    errors = second.errors - (first.errors if first else 0.0)
    window = "since the Pods started" if first is None else \
        f"over {int((second.time - first.time).total_seconds())}s"
    if requests < 0 or errors < 0:
        return False, f"{check.metric} went backwards {window}: the preview Pods restarted"
    if requests < max(check.min_requests, 1):
        return True, (f"error rate not judged: {int(requests)} requests {window}, fewer than "
                      f"minRequests {check.min_requests}")
    percent = 100.0 * errors / requests
    verdict = f"{percent:.2f}% of {int(requests)} requests answered 5xx {window} " \
              f"(limit {check.max_error_percent:g}%)"
    return percent <= check.max_error_percent, f"error rate {verdict}"


def _http_check(client: httpx.Client, check: HttpCheck, url: str) -> str | None:
    """None when every attempt passes, else what went wrong."""
    expected = ", ".join(map(str, check.expected_statuses))
    for attempt in range(1, check.attempts + 1):
        try:
            response = client.get(url, timeout=check.timeout_seconds)
        except httpx.HTTPError as error:
            return (f"pre-promotion check GET {url} failed on attempt {attempt} of "
                    f"{check.attempts}: {type(error).__name__}: {error}")
        if response.status_code not in check.expected_statuses:
            return (f"pre-promotion check GET {url} answered {response.status_code} (expected "
                    f"{expected}) on attempt {attempt} of {check.attempts}")
    return None


def _scrape(client: httpx.Client, url: str, check: ErrorRateCheck,
            now: datetime) -> ErrorSample:
    response = client.get(url, timeout=10)
    response.raise_for_status()
    requests, errors = parse_error_counts(response.text[:MAX_METRICS_BYTES], check.metric,
                                          check.status_label)
    return ErrorSample(time=now, requests=requests, errors=errors)


def run_checks(checks: PrePromotionChecks, request: CheckRequest, endpoint: PreviewEndpoint,
               now: datetime, client: httpx.Client | None = None) -> CheckReport:
    """Run what is due for ``request``: HTTP checks and the first (or only) scrape at the
    start, the second scrape once the sampling window has passed."""
    own = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        passed: list[str] = []
        if request.baseline is None:
            for check in checks.http:
                url = check.url or endpoint.url(check.path)
                problem = _http_check(http, check, url)
                if problem is not None:
                    return CheckReport(False, problem)
                passed.append(f"GET {url} x{check.attempts}")
        rate = checks.error_rate
        if rate is not None:
            url = rate.url or endpoint.url(rate.path)
            if request.baseline is not None and rate.sample_seconds:
                ends = request.baseline.time + timedelta(seconds=rate.sample_seconds)
                if now < ends:
                    return CheckReport(None, _sampling_message(url, ends), request.baseline)
            try:
                sample = _scrape(http, url, rate, now)
            except (httpx.HTTPError, ValueError) as error:
                return CheckReport(False, f"pre-promotion check could not read {url}: "
                                          f"{type(error).__name__}: {error}")
            if rate.sample_seconds and request.baseline is None:
                ends = now + timedelta(seconds=rate.sample_seconds)
                return CheckReport(None, _sampling_message(url, ends), sample)
            ok, verdict = error_rate_verdict(rate, request.baseline, sample)
            if not ok:
                return CheckReport(False, f"pre-promotion check {verdict} at {url}")
            passed.append(verdict)
        return CheckReport(True, "pre-promotion checks passed: " + "; ".join(passed))
    finally:
        if own:
            http.close()


def _sampling_message(url: str, ends: datetime) -> str:
    return f"sampling the error rate at {url} until {ends.strftime('%Y-%m-%dT%H:%M:%SZ')}"
