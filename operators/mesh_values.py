"""Values that end up in an Istio resource, checked to what Istio and Envoy accept.

Istio copies a VirtualService's ``retries.retryOn`` into Envoy's ``retry_on`` unchecked by
the Kubernetes schema, so ``retryOn: sometimes`` would be applied and reported in force
while Envoy ignores it. Each value is therefore declared here once, as a field type with a
CEL rule for the apiserver (with a message naming the offending value) and the same check
in Python for the operator, which validates every spec before it renders anything.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field

from operators.units import DURATION_PATTERN, parse_duration

# Envoy's x-envoy-retry-on policies (router filter) ...
ENVOY_RETRY_ON = ("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                  "envoy-ratelimited", "retriable-4xx", "refused-stream",
                  "retriable-status-codes", "retriable-headers", "http3-post-connect-failure")
# ... its x-envoy-retry-grpc-on policies ...
ENVOY_RETRY_GRPC_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                       "unavailable")
RETRY_CONDITIONS = ENVOY_RETRY_ON + ENVOY_RETRY_GRPC_ON
# ... and, as Istio adds them to retriable_status_codes, HTTP status codes as digits.
STATUS_CODE_PATTERN = r"^[1-5][0-9][0-9]$"
_STATUS_CODE = re.compile(STATUS_CODE_PATTERN)
_CONDITION_LIST = ", ".join(f"'{condition}'" for condition in RETRY_CONDITIONS)
_UNKNOWN = (f"self.split(',').filter(p, !(p in [{_CONDITION_LIST}]) && "
            f"!p.matches('{STATUS_CODE_PATTERN}'))")
_HINT = ("use a comma-separated list of Envoy retry conditions (" + ", ".join(RETRY_CONDITIONS)
         + ") or HTTP status codes such as 503")

RETRY_ON_RULE = {
    "rule": f"{_UNKNOWN}.size() == 0",
    "message": f"retryOn has a condition Envoy does not know: {_HINT}",
    "messageExpression": f"'retryOn ' + self + ' has a condition Envoy does not know (' + "
                         f"{_UNKNOWN}[0] + '): {_HINT}'",
    "reason": "FieldValueInvalid",
}


def unknown_retry_conditions(text: str) -> list[str]:
    """The entries of a retryOn list that are neither an Envoy condition nor a status code."""
    return [part for part in text.split(",")
            if part not in RETRY_CONDITIONS and not _STATUS_CODE.match(part)]


def _check_retry_on(text: str) -> str:
    unknown = unknown_retry_conditions(text)
    if unknown:
        raise ValueError(f"retryOn {text} has a condition Envoy does not know "
                         f"({unknown[0]}): {_HINT}")
    return text


RetryOn = Annotated[
    str,
    Field(min_length=1, max_length=256, json_schema_extra={
        "x-kubernetes-validations": [RETRY_ON_RULE]}),
    AfterValidator(_check_retry_on),
]
"""Envoy retry conditions, comma-separated (``connect-failure,refused-stream,503``)."""

# Istio refuses a duration under a millisecond in every field that takes one (its
# ValidateDuration); Envoy would otherwise read 0 as "no timeout".
_MIN_SECONDS = Decimal("0.001")
MESH_DURATION_RULE = {
    # Guarded by the pattern so a malformed value gets the pattern's error alone, not a
    # second one from a failed duration() call.
    "rule": f"!self.matches(r'{DURATION_PATTERN}') || duration(self) >= duration('1ms')",
    "message": "Istio durations must be at least 1ms",
    "messageExpression": "'duration ' + self + ' is shorter than 1ms, the least Istio accepts'",
    "reason": "FieldValueInvalid",
}


def _check_mesh_duration(text: str) -> str:
    if parse_duration(text) < _MIN_SECONDS:
        raise ValueError(f"duration {text} is shorter than 1ms, the least Istio accepts")
    return text


MeshDuration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=32, json_schema_extra={
        "x-kubernetes-validations": [MESH_DURATION_RULE]}),
    AfterValidator(_check_mesh_duration),
]
"""A Go-style duration of at least 1ms, for fields Istio turns into Envoy timeouts."""
