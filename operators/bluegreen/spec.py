"""BlueGreenRollout: release management for one CommerceService, after Argo Rollouts'
blue-green strategy.

A release manager stages a version by setting the idle colour's image, then flips
``spec.activeColor``; the operator moves traffic only once that colour is Available and its
pre-promotion checks pass, and keeps the old colour for instant rollback.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kommerce.contracts.release import Color as Color  # re-exported: the spec's colours
from operators.conditions import ResourceStatus
from operators.resources import CustomResource, PrinterColumn, status_columns
from operators.schema import CelRule, DnsLabel, KubeModel

Image = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
CheckPath = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^/[-A-Za-z0-9._~/?=&%]*$")]
CheckUrl = Annotated[str, Field(min_length=1, max_length=1024,
                                pattern=r"^https?://[^\s/@]+(/[^\s]*)?$")]
_URL_DESCRIPTION = (
    "Full http(s) URL requested instead of the preview Service (path is then ignored). It "
    "must name a Service of the rollout's own namespace that serves the port: "
    "http://<service>[:port]/path or "
    "http://<service>.<namespace>.svc[.cluster.local][:port]/path (not an ExternalName "
    "Service), unless the operator's KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST (URL prefixes or "
    "host:port) covers it. Any other URL is refused without a request: the rollout is "
    "Degraded with reason CheckUrlRefused. Only the status code or the error's name is "
    "reported back, never the response body.")


class RolloutPhase(StrEnum):
    """Where a rollout stands, as ``kubectl get bgr`` shows it."""

    PENDING = "Pending"  # not reconciled yet
    HEALTHY = "Healthy"  # traffic on the active colour, nothing in flight
    PAUSED = "Paused"  # a new image is staged on the preview colour, awaiting promotion
    PROGRESSING = "Progressing"  # waiting for the target colour to become Available
    CHECKING = "Checking"  # running pre-promotion checks against the preview Service
    DEGRADED = "Degraded"  # progress deadline passed or a check failed; traffic untouched
    ABORTED = "Aborted"  # spec.abort set: traffic back on the stable colour


class ServiceRef(KubeModel):
    """A CommerceService in the rollout's namespace."""

    name: DnsLabel = Field(description="Name of the CommerceService.")


class ColorSpec(KubeModel):
    """What one colour's Deployment runs."""

    image: Image = Field(description="Container image for this colour's Pods.")


class HttpCheck(KubeModel):
    """An HTTP GET against the preview Service that must answer with an expected status."""

    path: CheckPath = Field(default="/ready",
                            description="Path requested from the preview Service, e.g. /ready "
                                        "or a smoke-test path.")
    expected_statuses: list[int] = Field(
        default_factory=lambda: [200], min_length=1, max_length=10,
        description="Status codes that count as a pass.",
        json_schema_extra={"x-kubernetes-list-type": "set", "default": [200]})
    timeout_seconds: int = Field(default=5, ge=1, le=60,
                                 description="Seconds before a request counts as failed.")
    attempts: int = Field(default=3, ge=1, le=20,
                          description="Requests made; every one must pass.")
    url: CheckUrl | None = Field(default=None, description=_URL_DESCRIPTION)


class ErrorRateCheck(KubeModel):
    """An error-rate ceiling read from the preview Pods' Prometheus metrics endpoint.

    The error rate is the share of ``metric`` samples whose ``statusLabel`` is 5xx, over
    ``sampleSeconds`` (two scrapes) or since start when ``sampleSeconds`` is 0.
    """

    path: CheckPath = Field(default="/metrics",
                            description="Path of the Prometheus text endpoint on the preview "
                                        "Service.")
    metric: str = Field(default="http_requests_total", max_length=200,
                        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                        description="Counter of requests, labelled by status.")
    status_label: str = Field(default="status_code", max_length=100,
                              pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
                              description="Label holding the HTTP status code "
                                          "(Kommerce services call it status_code).")
    max_error_percent: float = Field(default=1.0, ge=0, le=100,
                                     description="Highest 5xx share, in percent, that passes.")
    min_requests: int = Field(default=0, ge=0, le=1_000_000,
                              description="Fewer requests than this in the window passes "
                                          "(too little traffic to judge).")
    sample_seconds: int = Field(default=30, ge=0, le=3600,
                                description="Window between the two scrapes; 0 uses the "
                                            "counters since the Pods started.")
    url: CheckUrl | None = Field(default=None, description=_URL_DESCRIPTION)


class PrePromotionChecks(KubeModel):
    """Checks run against the preview colour before traffic moves; any failure refuses the
    flip and leaves traffic where it is."""

    http: list[HttpCheck] = Field(default_factory=list, max_length=8,
                                  description="HTTP checks of the preview Service.")
    error_rate: ErrorRateCheck | None = Field(
        default=None, description="Error-rate ceiling read from the metrics endpoint.")


_ACTIVE_IMAGE_SET = ("(self.activeColor == 'blue' && has(self.blue)) || "
                     "(self.activeColor == 'green' && has(self.green))")


def _active_image_set(spec: BlueGreenRolloutSpec) -> bool:
    return (spec.blue if spec.active_color is Color.BLUE else spec.green) is not None


class BlueGreenRolloutSpec(KubeModel):
    """Which colour serves traffic, what each colour runs, and how a flip is guarded."""

    cel_rules = (
        CelRule(_ACTIVE_IMAGE_SET,
                "the active colour needs an image: set spec.blue.image or spec.green.image to "
                "match spec.activeColor",
                _active_image_set, field_path=".activeColor", reason="FieldValueRequired"),
        # Only when both are valid counts: a bad replicas gets its own error alone.
        CelRule("self.replicas < 1 || self.previewReplicas < 0 || "
                "self.previewReplicas <= self.replicas",
                "previewReplicas must not exceed replicas",
                lambda s: s.preview_replicas <= s.replicas, field_path=".previewReplicas",
                message_expression="'previewReplicas must not exceed replicas: %d > %d'"
                                   ".format([self.previewReplicas, self.replicas])",
                describe=lambda s: "previewReplicas must not exceed replicas: "
                                   f"{s.preview_replicas} > {s.replicas}"),
    )

    service_ref: ServiceRef = Field(description="The CommerceService this rollout releases.")
    active_color: Color = Field(default=Color.BLUE,
                                description="The colour that serves traffic; change it to "
                                            "promote the other colour.")
    blue: ColorSpec | None = Field(
        default=None, description="The blue Deployment. Only the active colour needs an "
                                  "image: a rollout may start with one colour and declare "
                                  "the other when a release is staged on it.")
    green: ColorSpec | None = Field(
        default=None, description="The green Deployment; optional while blue is active "
                                  "(see blue).")
    replicas: int = Field(default=3, ge=1, le=1000,
                          description="Pods of the active colour, and of a colour being "
                                      "promoted.")
    preview_replicas: int = Field(
        default=0, ge=0, le=1000,
        description="Pods the idle colour keeps once scaleDownDelaySeconds has passed; 0 "
                    "scales it away (it is scaled up again before a promotion).")
    auto_promotion_enabled: bool = Field(
        default=False,
        description="Promote the preview colour by itself once a new image is Available and "
                    "passes its checks, without a change to activeColor.")
    scale_down_delay_seconds: int = Field(
        default=30, ge=0, le=86400,
        description="Seconds the previous colour stays at full size after a flip, so an abort "
                    "rolls back instantly.")
    progress_deadline_seconds: int = Field(
        default=600, ge=10, le=86400,
        description="Seconds to wait for the target colour to become Available before the "
                    "rollout is Degraded (traffic is never moved to it).")
    pre_promotion_checks: PrePromotionChecks | None = Field(
        default=None, description="Checks of the preview colour that must pass before a flip.")
    abort: bool = Field(default=False,
                        description="Return traffic to the stable colour now and stop the "
                                    "rollout; set back to false to try again.")

    def image_for(self, color: Color) -> str | None:
        """The image declared for ``color``, if any."""
        declared = self.blue if color is Color.BLUE else self.green
        return declared.image if declared is not None else None


class FlipRecord(KubeModel):
    """One traffic switch, for ``kommerce rollout history``."""

    time: datetime = Field(description="When traffic moved.")
    from_color: Color = Field(description="Colour traffic left.")
    to_color: Color = Field(description="Colour traffic moved to.")
    from_image: str | None = Field(default=None, max_length=512,
                                   description="Image traffic left.")
    to_image: str | None = Field(default=None, max_length=512,
                                 description="Image traffic moved to.")
    reason: str | None = Field(default=None, max_length=1024,
                               description="Promote, AutoPromote, Abort or Rollback.")


HISTORY_LIMIT = 10


class ColorImages(KubeModel):
    """The image each colour's Deployment currently runs."""

    blue: str | None = Field(default=None, max_length=512, description="Blue's image.")
    green: str | None = Field(default=None, max_length=512, description="Green's image.")


class ErrorSample(KubeModel):
    """One scrape of the error-rate metric, kept in status so a sampling window survives an
    operator restart."""

    time: datetime = Field(description="When the metrics endpoint was read.")
    requests: float = Field(ge=0, description="Requests counted so far.")
    errors: float = Field(ge=0, description="5xx answers counted so far.")


class CheckState(StrEnum):
    """How far the pre-promotion checks of one attempt have come."""

    SAMPLING = "Sampling"  # first error-rate scrape taken, waiting for the window
    FAILED = "Failed"  # a check failed: this attempt never moves traffic


class Promotion(KubeModel):
    """The promotion in flight: kept in status, not in memory, so a restarted operator
    resumes it with the same deadline, sample and verdict."""

    attempt: str = Field(max_length=1024,
                         description="Identity of this try: target colour, image, generation "
                                     "and retry token; any of them changing starts afresh.")
    target_color: Color = Field(description="Colour traffic is to move to.")
    target_image: str | None = Field(default=None, max_length=512,
                                     description="Image of the target colour.")
    started_at: datetime = Field(description="When the operator began waiting for the target; "
                                             "progressDeadlineSeconds counts from here.")
    checks: CheckState | None = Field(default=None,
                                      description="Pre-promotion checks: Sampling or Failed.")
    check_message: str | None = Field(default=None, max_length=4096,
                                      description="What the checks found.")
    check_reason: str | None = Field(
        default=None, max_length=128,
        description="Why the checks failed, as one CamelCase word: PrePromotionCheckFailed, "
                    "or CheckUrlRefused for a url the operator will not request.")
    error_baseline: ErrorSample | None = Field(
        default=None, description="First error-rate scrape of a sampling window.")


class BlueGreenRolloutStatus(ResourceStatus):
    """Where the rollout stands."""

    phase: RolloutPhase | None = Field(default=None, description="Where the rollout stands.")
    active_color: Color | None = Field(default=None,
                                       description="The colour that receives traffic now.")
    preview_color: Color | None = Field(default=None,
                                        description="The colour behind the preview Service.")
    stable_color: Color | None = Field(
        default=None, description="The last colour that was fully promoted; abort returns here.")
    images: ColorImages | None = Field(default=None, description="Images by colour.")
    last_flip_time: datetime | None = Field(default=None, description="When traffic last moved.")
    scale_down_at: datetime | None = Field(
        default=None, description="When the previous colour will be scaled to previewReplicas.")
    message: str | None = Field(default=None, max_length=4096,
                                description="Why the rollout is in its phase.")
    reason: str | None = Field(default=None, max_length=128,
                               description="Why the rollout is in its phase, as one CamelCase "
                                           "word (the reason of its latest Event).")
    promotion: Promotion | None = Field(default=None,
                                        description="The promotion in flight, if any.")
    history: list[FlipRecord] | None = Field(
        default=None, max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} flips, newest first.")


RESOURCE = CustomResource(
    kind="BlueGreenRollout",
    plural="bluegreenrollouts",
    singular="bluegreenrollout",
    short_names=("bgr",),
    spec_model=BlueGreenRolloutSpec,
    status_model=BlueGreenRolloutStatus,
    description=(
        "Blue-green release of one CommerceService: a Deployment per colour, an active and a "
        "preview Service, and Istio subsets. Set the idle colour's image, then flip "
        "spec.activeColor; the operator moves traffic only to an Available, checked colour."),
    printer_columns=(
        PrinterColumn("Service", ".spec.serviceRef.name", "string", "The CommerceService."),
        PrinterColumn("Active", ".status.activeColor", "string", "Colour receiving traffic."),
        PrinterColumn("Desired", ".spec.activeColor", "string", "Colour asked for.", priority=1),
        PrinterColumn("Phase", ".status.phase", "string", "Where the rollout stands."),
        PrinterColumn("Blue", ".spec.blue.image", "string", "Blue image.", priority=1),
        PrinterColumn("Green", ".spec.green.image", "string", "Green image.", priority=1),
        *status_columns(),
    ),
)
