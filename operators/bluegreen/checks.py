"""Pre-promotion checks against the preview colour: HTTP probes and an error-rate ceiling.

The only I/O of the rollout besides the API server. Requests go to the preview Service
(``http://<svc>-preview.<ns>.svc.cluster.local:<port><path>``) unless a check names a full
``url``: another Service of the rollout's namespace (a smoke-test or aggregated metrics
endpoint) or an address the operator's allowlist covers — in the tests, the benchmark and
``kommerce up --cluster``, where Services have no real endpoints, a server on loopback.
:mod:`operators.bluegreen.check_urls` decides which, for every URL of a round before the
first request, so a refused URL means nothing was sent at all.

What goes back into the rollout's status is a status code or the name of the error, never
what the endpoint answered: the body of a response (or the banner of something that is not
an HTTP server) is not for whoever can read the rollout.

HTTP checks run once at the start of an attempt; the error-rate check either reads the
counters since the Pods started (``sampleSeconds: 0``) or scrapes twice, ``sampleSeconds``
apart, with the first scrape kept in status so a restart does not lose the window.
Parsing and the verdict are pure functions; only :func:`run_checks` talks to the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from operators.bluegreen.check_urls import REFUSED_REASON, CheckUrlPolicy, RefusedCheckUrl
from operators.bluegreen.decide import CheckReport, CheckRequest
from operators.bluegreen.render import preview_service_name
from operators.bluegreen.spec import ErrorRateCheck, ErrorSample, HttpCheck, PrePromotionChecks
from operators.runtime import check_url_policy

MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PreviewEndpoint:
    """Where the preview colour answers inside the cluster."""

    service: str
    namespace: str
    port: int
    # ``ip:port`` of each ready Pod behind the preview Service: counters are per Pod, and
    # two scrapes through the Service may land on different Pods (a false "went backwards").
    pods: tuple[str, ...] = ()

    def url(self, path: str) -> str:
        host = f"{preview_service_name(self.service)}.{self.namespace}.svc.cluster.local"
        return f"http://{host}:{self.port}{path}"

    def pod_urls(self, path: str) -> list[str]:
        return [f"http://{address}{path}" for address in self.pods]


def ready_addresses(slices: list[dict[str, Any]]) -> tuple[str, ...]:
    """``ip:port`` of every ready endpoint in a Service's EndpointSlices, sorted."""
    found: set[str] = set()
    for endpoint_slice in slices:
        ports = [p["port"] for p in endpoint_slice.get("ports") or [] if p.get("port")]
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found.update(f"{address}:{port}" for address in endpoint.get("addresses", [])
                         for port in ports[:1])
    return tuple(sorted(found))


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


class _Unreadable(Exception):
    """A metrics endpoint that gave no counters; the message is short and holds no body."""


def _http_check(client: httpx.Client, check: HttpCheck, url: str) -> str | None:
    """None when every attempt passes, else what went wrong (the error's name only: its text
    can quote what the other end sent)."""
    expected = ", ".join(map(str, check.expected_statuses))
    for attempt in range(1, check.attempts + 1):
        try:
            with client.stream("GET", url, timeout=check.timeout_seconds) as response:
                pass  # the status is the verdict; the body is never read
        except httpx.HTTPError as error:
            return (f"pre-promotion check GET {url} failed on attempt {attempt} of "
                    f"{check.attempts}: {type(error).__name__}")
        if response.status_code not in check.expected_statuses:
            return (f"pre-promotion check GET {url} answered {response.status_code} (expected "
                    f"{expected}) on attempt {attempt} of {check.attempts}")
    return None


def _scrape(client: httpx.Client, url: str, check: ErrorRateCheck,
            now: datetime) -> ErrorSample:
    """One read of the counters, at most MAX_METRICS_BYTES of it."""
    try:
        with client.stream("GET", url, timeout=10) as response:
            if not response.is_success:
                raise _Unreadable(f"answered {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_METRICS_BYTES:
                    raise _Unreadable(f"sent more than {MAX_METRICS_BYTES} bytes")
    except httpx.HTTPError as error:
        raise _Unreadable(type(error).__name__) from error
    try:
        requests, errors = parse_error_counts(body.decode("utf-8", errors="replace"),
                                              check.metric, check.status_label)
    except ValueError as error:
        # The parser's message quotes the offending line, i.e. the body.
        raise _Unreadable("answered with something that is not Prometheus text") from error
    return ErrorSample(time=now, requests=requests, errors=errors)


def _scrape_all(client: httpx.Client, urls: list[str], check: ErrorRateCheck,
                now: datetime) -> ErrorSample:
    """The counters summed over every Pod: one sample of the colour as a whole."""
    samples = [_scrape(client, url, check, now) for url in urls]
    return ErrorSample(time=now, requests=sum(s.requests for s in samples),
                       errors=sum(s.errors for s in samples))


def run_checks(checks: PrePromotionChecks, request: CheckRequest, endpoint: PreviewEndpoint,
               now: datetime, *, policy: CheckUrlPolicy | None = None,
               client: httpx.Client | None = None) -> CheckReport:
    """Run what is due for ``request``: HTTP checks and the first (or only) scrape at the
    start, the second scrape once the sampling window has passed. Every URL of the round is
    vetted by ``policy`` first (by default the operator's: the endpoint's namespace and the
    configured allowlist); one refused fails the round without a request."""
    if policy is None:
        policy = check_url_policy(endpoint.namespace)
    rate = checks.error_rate
    if rate is not None and request.baseline is not None and rate.sample_seconds:
        ends = request.baseline.time + timedelta(seconds=rate.sample_seconds)
        if now < ends:
            shown = rate.url or endpoint.url(rate.path)
            return CheckReport(None, _sampling_message(shown, ends), request.baseline)
    try:
        http_urls = [] if request.baseline is not None else [
            policy.resolve(check.url) if check.url else endpoint.url(check.path)
            for check in checks.http]
        rate_url = None if rate is None else (
            policy.resolve(rate.url) if rate.url else endpoint.url(rate.path))
    except RefusedCheckUrl as refused:
        return CheckReport(False, str(refused), reason=REFUSED_REASON)
    own = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        passed: list[str] = []
        for check, url in zip(checks.http, http_urls, strict=False):
            problem = _http_check(http, check, url)
            if problem is not None:
                return CheckReport(False, problem)
            passed.append(f"GET {url} x{check.attempts}")
        if rate is not None and rate_url is not None:
            # The operator's own addresses for the Pods (not user input, so not vetted);
            # a check naming its own url reads that one endpoint as it is.
            targets = endpoint.pod_urls(rate.path) if not rate.url and endpoint.pods \
                else [rate_url]
            try:
                sample = _scrape_all(http, targets, rate, now)
            except _Unreadable as problem:
                return CheckReport(False, f"pre-promotion check could not read {rate_url}: "
                                          f"{problem}")
            if rate.sample_seconds and request.baseline is None:
                ends = now + timedelta(seconds=rate.sample_seconds)
                return CheckReport(None, _sampling_message(rate_url, ends), sample)
            ok, verdict = error_rate_verdict(rate, request.baseline, sample)
            if not ok:
                return CheckReport(False, f"pre-promotion check {verdict} at {rate_url}")
            passed.append(verdict)
        return CheckReport(True, "pre-promotion checks passed: " + "; ".join(passed))
    finally:
        if own:
            http.close()


def _sampling_message(url: str, ends: datetime) -> str:
    return f"sampling the error rate at {url} until {ends.strftime('%Y-%m-%dT%H:%M:%SZ')}"
