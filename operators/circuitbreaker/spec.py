"""CircuitBreakerPolicy: how calls to one CommerceService are limited, ejected and retried.

One policy drives two breakers that must trip alike: the mesh's (merged into the target's
DestinationRule and VirtualService) and the in-process one in the callers' shared HTTP client
(a ConfigMap they hot-reload). The client defaults are the reference platform's opossum
settings: timeout 3 s, error threshold 50 %, reset 30 s, rolling window 10 s in 10 buckets.
"""

from __future__ import annotations

from pydantic import Field

from operators.conditions import ResourceStatus
from operators.mesh_values import RETRY_CONDITIONS, MeshDuration, RetryOn
from operators.resources import CustomResource, PrinterColumn, status_columns
from operators.schema import CelRule, DnsLabel, Duration, KubeModel, nested
from operators.units import parse_duration


class TargetRef(KubeModel):
    """A CommerceService in the policy's namespace."""

    name: DnsLabel = Field(description="Name of the CommerceService whose calls this governs.")


class ConnectionPool(KubeModel):
    """Envoy connection-pool limits towards the target (Istio connectionPool)."""

    max_connections: int = Field(default=100, ge=1, le=1_000_000,
                                 description="Most TCP connections to the target per caller "
                                             "proxy.")
    http1_max_pending_requests: int = Field(
        default=100, ge=1, le=1_000_000,
        description="Most requests queued while waiting for a connection; more are refused "
                    "with 503 at once.")
    max_requests_per_connection: int = Field(
        default=0, ge=0, le=1_000_000,
        description="Requests before a connection is recycled; 0 means no limit.")
    connect_timeout: MeshDuration = Field(default="3s", description="TCP connect timeout.")


class OutlierDetection(KubeModel):
    """Ejects target Pods that keep failing (Istio outlierDetection)."""

    consecutive_5xx_errors: int = Field(
        default=5, ge=1, le=1000, alias="consecutive5xxErrors",
        description="5xx answers in a row after which a Pod is ejected.")
    interval: MeshDuration = Field(default="10s", description="How often Pods are evaluated.")
    base_ejection_time: MeshDuration = Field(
        default="30s", description="How long an ejected Pod stays out (times its ejections).")
    max_ejection_percent: int = Field(default=50, ge=0, le=100,
                                      description="Most Pods, in percent, ejected at once.")


class Retries(KubeModel):
    """How the mesh retries a failed call."""

    attempts: int = Field(default=2, ge=0, le=10, description="Retries after the first try.")
    per_try_timeout: MeshDuration = Field(default="2s", description="Timeout of each try.")
    retry_on: RetryOn = Field(
        default="connect-failure,refused-stream,unavailable",
        description="Envoy retry conditions, comma-separated: any of "
                    f"{', '.join(RETRY_CONDITIONS)}, or an HTTP status code such as 503. The "
                    "default retries only calls that never reached the service, which is safe "
                    "for non-idempotent requests such as payments.")


class ClientBreaker(KubeModel):
    """The in-process breaker in callers' HTTP clients (the reference's opossum settings)."""

    cel_rules = (
        CelRule("duration(self.rollingWindow).getMilliseconds() % self.rollingBuckets == 0",
                "client.rollingWindow must divide evenly into client.rollingBuckets "
                "(e.g. 10s in 10 buckets)",
                lambda c: int(parse_duration(c.rolling_window) * 1000) % c.rolling_buckets == 0,
                field_path=".rollingBuckets"),
    )

    timeout: Duration = Field(default="3s", description="A call slower than this fails.")
    error_threshold_percentage: int = Field(
        default=50, ge=1, le=100,
        description="Failure share, in percent, within the rolling window that opens the "
                    "breaker.")
    reset_timeout: Duration = Field(
        default="30s", description="Time open before one trial call (half-open) is let through.")
    rolling_window: Duration = Field(default="10s",
                                     description="Window the failure share is computed over.")
    rolling_buckets: int = Field(default=10, ge=1, le=100,
                                 description="Buckets the rolling window is split into.")
    volume_threshold: int = Field(
        default=5, ge=0, le=100_000,
        description="Calls needed in the window before the breaker may open at all, so one "
                    "failure out of one call does not trip it.")


class CircuitBreakerPolicySpec(KubeModel):
    """Limits, ejection, retries and timeouts for calls to one CommerceService."""

    cel_rules = (
        CelRule("duration(self.retries.perTryTimeout) <= duration(self.timeout)",
                "retries.perTryTimeout must not be longer than timeout: the overall timeout "
                "would cut every try short",
                lambda s: parse_duration(s.retries.per_try_timeout) <= parse_duration(s.timeout),
                field_path=".retries.perTryTimeout"),
    )

    target_ref: TargetRef = Field(description="The CommerceService this policy protects.")
    connection_pool: ConnectionPool = nested(ConnectionPool, "Connection-pool limits.")
    outlier_detection: OutlierDetection = nested(OutlierDetection,
                                                 "Ejection of failing target Pods.")
    retries: Retries = nested(Retries, "Mesh retries.")
    timeout: MeshDuration = Field(default="10s",
                                  description="Overall timeout of a call, retries included.")
    client: ClientBreaker = nested(ClientBreaker,
                                   "Settings for callers' in-process circuit breakers.")


class CircuitBreakerPolicyStatus(ResourceStatus):
    """Whether the policy has been merged into its target's routes."""

    target_host: str | None = Field(default=None, max_length=253,
                                    description="The Service host the policy applies to.")


RESOURCE = CustomResource(
    kind="CircuitBreakerPolicy",
    plural="circuitbreakerpolicies",
    singular="circuitbreakerpolicy",
    short_names=("cbp",),
    spec_model=CircuitBreakerPolicySpec,
    status_model=CircuitBreakerPolicyStatus,
    description=(
        "Circuit breaking for calls to one CommerceService: connection pool, outlier "
        "detection, retries and timeout in its Istio routes, and the same breaker settings "
        "for callers' HTTP clients."),
    printer_columns=(
        PrinterColumn("Target", ".spec.targetRef.name", "string", "The protected service."),
        PrinterColumn("Timeout", ".spec.timeout", "string", "Overall call timeout."),
        *status_columns(),
    ),
)
