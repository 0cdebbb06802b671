"""The blue-green state machine, one transition per test, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operators.bluegreen.decide import CheckReport, Decision, Observed, decide
from operators.bluegreen.spec import (
    HISTORY_LIMIT,
    BlueGreenRolloutSpec,
    BlueGreenRolloutStatus,
    CheckState,
    Color,
    ErrorSample,
    RolloutPhase,
)
from operators.workloads import DeploymentProgress, RolloutState

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
BLUE, GREEN = Color.BLUE, Color.GREEN
CHECKS = {"http": [{"path": "/ready"}]}


def _spec(**overrides: Any) -> BlueGreenRolloutSpec:
    spec: dict[str, Any] = {
        "serviceRef": {"name": "shop"}, "activeColor": "blue",
        "blue": {"image": "shop:1"}, "green": {"image": "shop:1"},
        "replicas": 3, "previewReplicas": 0, "scaleDownDelaySeconds": 30,
        "progressDeadlineSeconds": 60,
    }
    spec.update(overrides)
    return BlueGreenRolloutSpec.model_validate(spec)


def _available(image: str, replicas: int = 3) -> DeploymentProgress:
    return DeploymentProgress(RolloutState.COMPLETE, f"{replicas} of {replicas} Pods available",
                              desired=replicas, ready=replicas, updated=replicas,
                              available=replicas, image=image)


def _rolling(image: str, replicas: int = 3) -> DeploymentProgress:
    return DeploymentProgress(RolloutState.ROLLING, f"1 of {replicas} updated Pods are available",
                              desired=replicas, ready=1, updated=replicas, available=1,
                              image=image)


def _observed(blue: DeploymentProgress | None = None, green: DeploymentProgress | None = None,
              *, generation: int = 1, found: bool = True, retry: str = "") -> Observed:
    deployments = {color: progress for color, progress in ((BLUE, blue), (GREEN, green))
                   if progress is not None}
    return Observed(generation, found, deployments, retry)


def _after(decision: Decision) -> BlueGreenRolloutStatus:
    """The status as the next reconcile reads it back from the API server."""
    return BlueGreenRolloutStatus.model_validate(decision.status.wire())


def _healthy(**spec: Any) -> BlueGreenRolloutStatus:
    """Blue carries traffic with shop:1, green idle."""
    first = decide(_spec(**spec), BlueGreenRolloutStatus(), _observed(), NOW)
    taken = decide(_spec(**spec), _after(first), _observed(_available("shop:1")), NOW)
    assert taken.status.phase is RolloutPhase.HEALTHY
    return _after(taken)


def _flipped(**spec: Any) -> BlueGreenRolloutStatus:
    """Green (shop:2) took traffic from blue (shop:1) at NOW; blue kept for the delay."""
    promote = {"activeColor": "green", "green": {"image": "shop:2"}, **spec}
    decision = decide(_spec(**promote), _healthy(), _observed(
        _available("shop:1"), _available("shop:2")), NOW, checks=CheckReport(True, "passed"))
    assert decision.status.active_color is GREEN
    return _after(decision)


def _reasons(decision: Decision) -> list[str]:
    return [event.reason for event in decision.events]


# -- taking traffic over ------------------------------------------------------------------


def test_first_reconcile_deploys_the_active_colour_and_leaves_traffic_with_the_service() -> None:
    decision = decide(_spec(), BlueGreenRolloutStatus(), _observed(), NOW)
    assert decision.status.phase is RolloutPhase.PROGRESSING
    assert decision.status.reason == "WaitingForAvailable"
    assert decision.plan is not None and decision.plan.traffic is None
    assert decision.plan.replicas == {BLUE: 3, GREEN: 0}
    assert decision.plan.images == {BLUE: "shop:1", GREEN: "shop:1"}
    assert decision.status.active_color is None


def test_traffic_is_taken_over_once_the_active_colour_is_available() -> None:
    first = decide(_spec(), BlueGreenRolloutStatus(), _observed(), NOW)
    decision = decide(_spec(), _after(first), _observed(_available("shop:1")), NOW)
    assert decision.status.phase is RolloutPhase.HEALTHY
    assert decision.status.active_color is BLUE and decision.status.stable_color is BLUE
    assert decision.plan is not None and decision.plan.traffic is BLUE
    assert decision.plan.preview is GREEN
    assert "TrafficTakenOver" in _reasons(decision)
    assert decision.status.history is None  # nothing flipped between colours yet


def test_nothing_changes_and_nothing_is_told_when_nothing_happened() -> None:
    status = _healthy()
    decision = decide(_spec(), status, _observed(_available("shop:1")), NOW + timedelta(1))
    assert decision.status.wire() == status.wire()
    assert decision.events == ()


# -- staging and promoting ----------------------------------------------------------------


def test_staging_an_image_on_the_preview_colour_pauses_for_promotion() -> None:
    spec = _spec(green={"image": "shop:2"})
    decision = decide(spec, _healthy(), _observed(_available("shop:1")), NOW)
    assert decision.status.phase is RolloutPhase.PAUSED
    assert decision.plan is not None
    assert decision.plan.images[GREEN] == "shop:2" and decision.plan.replicas[GREEN] == 0
    assert decision.plan.traffic is BLUE
    assert "PreviewStaged" in _reasons(decision)


def test_flip_waits_until_green_is_available() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    decision = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    assert decision.status.phase is RolloutPhase.PROGRESSING
    assert decision.status.reason == "WaitingForAvailable"
    assert "1 of 3 updated Pods are available" in (decision.status.message or "")
    assert decision.plan is not None and decision.plan.traffic is BLUE
    assert decision.plan.replicas == {BLUE: 3, GREEN: 3}
    assert decision.status.promotion is not None
    assert decision.status.promotion.started_at == NOW


@pytest.mark.parametrize("green", [_available("shop:1"), _available("shop:2", replicas=1)],
                         ids=["old-image", "preview-size"])
def test_an_available_colour_at_the_wrong_image_or_size_does_not_take_traffic(
        green: DeploymentProgress) -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    decision = decide(spec, _healthy(), _observed(_available("shop:1"), green), NOW)
    assert decision.status.phase is RolloutPhase.PROGRESSING
    assert decision.status.active_color is BLUE


def test_past_the_progress_deadline_the_rollout_is_degraded_and_traffic_untouched() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    waiting = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    late = decide(spec, _after(waiting), _observed(_available("shop:1"), _rolling("shop:2")),
                  NOW + timedelta(seconds=61))
    assert late.status.phase is RolloutPhase.DEGRADED
    assert late.status.reason == "ProgressDeadlineExceeded"
    assert late.plan is not None and late.plan.traffic is BLUE
    assert [(e.type, e.reason) for e in late.events] == [("Warning", "ProgressDeadlineExceeded")]
    degraded = next(c for c in late.status.conditions or [] if c.type == "Degraded")
    assert degraded.status == "True"


def test_a_colour_available_after_its_deadline_still_takes_traffic() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    waiting = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    later = NOW + timedelta(seconds=120)
    decision = decide(spec, _after(waiting), _observed(_available("shop:1"),
                                                       _available("shop:2")), later)
    assert decision.status.active_color is GREEN


def test_flip_moves_traffic_records_history_and_keeps_the_old_colour_at_full_size() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    decision = decide(spec, _healthy(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW)
    status = decision.status
    assert status.phase is RolloutPhase.HEALTHY
    assert (status.active_color, status.preview_color, status.stable_color) == (GREEN, BLUE, BLUE)
    assert status.last_flip_time == NOW
    assert status.scale_down_at == NOW + timedelta(seconds=30)
    assert status.history is not None
    record = status.history[0]
    assert (record.from_color, record.to_color, record.from_image, record.to_image,
            record.reason) == (BLUE, GREEN, "shop:1", "shop:2", "Promote")
    assert decision.plan is not None and decision.plan.traffic is GREEN
    assert decision.plan.replicas == {BLUE: 3, GREEN: 3}
    assert "Promoted" in _reasons(decision)
    assert status.images is not None and status.images.green == "shop:2"


def test_without_a_delay_the_old_colour_goes_straight_to_preview_size() -> None:
    decision = decide(_spec(activeColor="green", green={"image": "shop:2"},
                            scaleDownDelaySeconds=0),
                      _healthy(), _observed(_available("shop:1"), _available("shop:2")), NOW)
    assert decision.plan is not None and decision.plan.replicas == {BLUE: 0, GREEN: 3}
    assert decision.status.stable_color is GREEN and decision.status.scale_down_at is None


def test_old_colour_is_scaled_to_preview_replicas_after_the_delay() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, previewReplicas=1)
    status = _flipped(previewReplicas=1)
    observed = _observed(_available("shop:1"), _available("shop:2"))
    during = decide(spec, status, observed, NOW + timedelta(seconds=29))
    assert during.plan is not None and during.plan.replicas[BLUE] == 3
    after = decide(spec, status, observed, NOW + timedelta(seconds=31))
    assert after.plan is not None and after.plan.replicas == {BLUE: 1, GREEN: 3}
    assert after.status.stable_color is GREEN and after.status.scale_down_at is None
    assert "ScaledDown" in _reasons(after)


def test_setting_active_color_back_before_the_flip_cancels_the_promotion() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    waiting = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    back = decide(_spec(green={"image": "shop:2"}), _after(waiting),
                  _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    assert back.status.phase is RolloutPhase.PAUSED and back.status.promotion is None
    assert back.plan is not None and back.plan.replicas[GREEN] == 0
    assert "PromotionCancelled" in _reasons(back)


# -- pre-promotion checks ------------------------------------------------------------------


def test_checks_run_before_traffic_moves() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    decision = decide(spec, _healthy(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW)
    assert decision.checks is not None and decision.checks.target is GREEN
    assert decision.plan is None and decision.status.phase is RolloutPhase.CHECKING


def test_passing_checks_flip_traffic() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    decision = decide(spec, _healthy(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW, checks=CheckReport(True, "pre-promotion checks passed"))
    assert decision.status.active_color is GREEN


def test_a_failed_check_refuses_the_flip_and_is_not_retried_for_the_same_attempt() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    observed = _observed(_available("shop:1"), _available("shop:2"))
    failed = decide(spec, _healthy(), observed, NOW,
                    checks=CheckReport(False, "GET /ready answered 503"))
    assert failed.status.phase is RolloutPhase.DEGRADED
    assert failed.status.reason == "PrePromotionCheckFailed"
    assert failed.status.active_color is BLUE
    assert failed.plan is not None and failed.plan.traffic is BLUE
    assert ("Warning", "PrePromotionCheckFailed") in [(e.type, e.reason) for e in failed.events]
    assert failed.status.promotion is not None
    assert failed.status.promotion.checks is CheckState.FAILED
    again = decide(spec, _after(failed), observed, NOW + timedelta(seconds=5))
    assert again.checks is None and again.status.phase is RolloutPhase.DEGRADED
    assert again.events == ()


def test_a_new_retry_token_or_generation_starts_a_new_attempt() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    observed = _observed(_available("shop:1"), _available("shop:2"))
    failed = _after(decide(spec, _healthy(), observed, NOW, checks=CheckReport(False, "no")))
    retried = _observed(_available("shop:1"), _available("shop:2"), retry="2025-01-01T12:01")
    assert decide(spec, failed, retried, NOW).checks is not None
    bumped = _observed(_available("shop:1"), _available("shop:2"), generation=2)
    assert decide(spec, failed, bumped, NOW).checks is not None


def test_an_error_rate_window_is_kept_in_status_across_reconciles() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"},
                 prePromotionChecks={"errorRate": {"sampleSeconds": 30}})
    observed = _observed(_available("shop:1"), _available("shop:2"))
    baseline = ErrorSample(time=NOW, requests=100, errors=0)
    sampling = decide(spec, _healthy(), observed, NOW,
                      checks=CheckReport(None, "sampling until 12:00:30", baseline))
    assert sampling.status.phase is RolloutPhase.CHECKING
    assert sampling.status.reason == "SamplingErrorRate"
    assert sampling.status.active_color is BLUE
    next_round = decide(spec, _after(sampling), observed, NOW + timedelta(seconds=10))
    assert next_round.checks is not None and next_round.checks.baseline == baseline


def test_rolling_back_within_the_delay_skips_checks_and_moves_at_once() -> None:
    status = _flipped(prePromotionChecks=CHECKS)
    spec = _spec(activeColor="blue", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    decision = decide(spec, status, _observed(_available("shop:1"), _available("shop:2")),
                      NOW + timedelta(seconds=5))
    assert decision.checks is None
    assert decision.status.active_color is BLUE and decision.status.stable_color is BLUE
    assert decision.status.history is not None
    assert decision.status.history[0].reason == "Rollback"
    assert decision.plan is not None and decision.plan.replicas == {BLUE: 3, GREEN: 0}


# -- abort ---------------------------------------------------------------------------------


def test_abort_within_the_delay_returns_traffic_to_the_stable_colour() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, abort=True)
    decision = decide(spec, _flipped(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW + timedelta(seconds=5))
    assert decision.status.phase is RolloutPhase.ABORTED
    assert decision.status.active_color is BLUE
    assert decision.plan is not None and decision.plan.traffic is BLUE
    assert decision.plan.replicas == {BLUE: 3, GREEN: 0}
    assert decision.status.history is not None
    assert decision.status.history[0].reason == "Abort"
    assert ("Warning", "RolledBack") in [(e.type, e.reason) for e in decision.events]


def test_abort_before_the_flip_stops_the_promotion_where_it_is() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    waiting = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    aborted = decide(_spec(activeColor="green", green={"image": "shop:2"}, abort=True),
                     _after(waiting), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    assert aborted.status.phase is RolloutPhase.ABORTED
    assert aborted.status.active_color is BLUE and aborted.status.promotion is None
    assert aborted.plan is not None and aborted.plan.replicas == {BLUE: 3, GREEN: 0}


def test_abort_after_the_delay_leaves_traffic_on_the_new_stable_colour() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, abort=True)
    decision = decide(spec, _flipped(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW + timedelta(seconds=31))
    assert decision.status.active_color is GREEN
    assert decision.status.phase is RolloutPhase.ABORTED


def test_clearing_abort_promotes_again() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, abort=True)
    observed = _observed(_available("shop:1"), _available("shop:2"))
    aborted = _after(decide(spec, _flipped(), observed, NOW + timedelta(seconds=5)))
    resumed = decide(_spec(activeColor="green", green={"image": "shop:2"}), aborted,
                     _observed(_available("shop:1"), _available("shop:2"), generation=2),
                     NOW + timedelta(seconds=6))
    assert resumed.status.active_color is GREEN


# -- auto-promotion, mistakes and missing pieces -----------------------------------------


def test_auto_promotion_sets_active_color_for_a_newly_staged_image() -> None:
    status = _healthy(autoPromotionEnabled=True)
    decision = decide(_spec(autoPromotionEnabled=True, green={"image": "shop:2"}), status,
                      _observed(_available("shop:1")), NOW)
    assert decision.promote_to is GREEN
    assert decision.plan is not None and decision.plan.replicas[GREEN] == 3


def test_auto_promotion_does_not_bounce_back_to_the_previous_image() -> None:
    status = _flipped(autoPromotionEnabled=True)
    spec = _spec(activeColor="green", green={"image": "shop:2"}, autoPromotionEnabled=True)
    later = NOW + timedelta(seconds=31)
    decision = decide(spec, status, _observed(_available("shop:1"), _available("shop:2")), later)
    assert decision.promote_to is None
    assert decision.status.phase is RolloutPhase.HEALTHY


def test_editing_the_active_colours_image_is_refused_and_reported() -> None:
    decision = decide(_spec(blue={"image": "shop:9"}), _healthy(),
                      _observed(_available("shop:1")), NOW)
    assert decision.status.phase is RolloutPhase.DEGRADED
    assert decision.status.reason == "ActiveImageChanged"
    assert decision.plan is not None and decision.plan.images[BLUE] == "shop:1"


def test_a_missing_commerce_service_is_degraded_and_renders_nothing() -> None:
    decision = decide(_spec(), BlueGreenRolloutStatus(), _observed(found=False), NOW)
    assert decision.status.phase is RolloutPhase.DEGRADED
    assert decision.status.reason == "ServiceNotFound"
    assert decision.plan is None


def test_a_new_image_on_the_old_colour_ends_its_rollback_window() -> None:
    spec = _spec(activeColor="green", blue={"image": "shop:3"}, green={"image": "shop:2"})
    decision = decide(spec, _flipped(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW + timedelta(seconds=5))
    assert decision.status.stable_color is GREEN and decision.status.scale_down_at is None
    assert "RollbackWindowClosed" in _reasons(decision)
    assert decision.status.phase is RolloutPhase.PAUSED


def test_history_keeps_only_the_latest_flips() -> None:
    status = _healthy()
    observed = _observed(_available("shop:1"), _available("shop:1"))
    color, moment = BLUE, NOW
    for _ in range(HISTORY_LIMIT + 3):
        color, moment = color.other, moment + timedelta(seconds=60)
        status = _after(decide(_spec(activeColor=color.value), status, observed, moment))
    assert status.history is not None and len(status.history) == HISTORY_LIMIT
    assert status.history[0].to_color is color and status.history[0].time == moment


def test_a_restarted_operator_resumes_the_flip_from_status_alone() -> None:
    """Everything the machine needs survives a round trip through the API server."""
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    waiting = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    reread = BlueGreenRolloutStatus.model_validate(waiting.status.wire())
    assert reread.promotion == waiting.status.promotion
    resumed = decide(spec, reread, _observed(_available("shop:1"), _available("shop:2")),
                     NOW + timedelta(seconds=20))
    assert resumed.status.active_color is GREEN
    assert resumed.status.scale_down_at == NOW + timedelta(seconds=50)


# -- the order of a flip's writes ----------------------------------------------------------


def test_a_flip_carries_an_intent_that_claims_nothing_has_moved_yet() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    healthy = _healthy()
    decision = decide(spec, healthy, _observed(_available("shop:1"), _available("shop:2")),
                      NOW + timedelta(seconds=9),
                      checks=CheckReport(True, "pre-promotion checks passed"))
    intent = decision.intent
    assert intent is not None and decision.status.active_color is GREEN
    assert intent.active_color is BLUE and intent.phase is RolloutPhase.PROGRESSING
    assert intent.reason == "MovingTraffic" and "green (shop:2)" in (intent.message or "")
    assert not intent.history and intent.last_flip_time == healthy.last_flip_time == NOW
    assert intent.promotion is not None and intent.promotion.target_color is GREEN
    ready = next(c for c in intent.conditions or [] if c.type == "Ready")
    assert ready.status == "False"


def test_no_intent_when_traffic_stays() -> None:
    spec = _spec(activeColor="green", green={"image": "shop:2"})
    waiting = decide(spec, _healthy(), _observed(_available("shop:1"), _rolling("shop:2")), NOW)
    assert waiting.intent is None
    assert decide(_spec(), _healthy(), _observed(_available("shop:1")), NOW).intent is None


def _intent_written() -> tuple[Any, Any, BlueGreenRolloutStatus]:
    """Green promoted with its checks passed: the spec, what was observed, and the intent
    status as the API server gives it back."""
    spec = _spec(activeColor="green", green={"image": "shop:2"}, prePromotionChecks=CHECKS)
    observed = _observed(_available("shop:1"), _available("shop:2"))
    first = decide(spec, _healthy(), observed, NOW,
                   checks=CheckReport(True, "pre-promotion checks passed"))
    assert first.intent is not None
    reread = BlueGreenRolloutStatus.model_validate(first.intent.wire())
    return spec, observed, reread


def test_killed_after_the_intent_the_flip_finishes_without_running_the_checks_again() -> None:
    """The checks of this attempt passed before the intent was written; the traffic objects
    may already point at green. Asking again would hold traffic half-moved for a new
    error-rate window, or send it back on a flaky answer."""
    spec, observed, reread = _intent_written()
    moved = NOW + timedelta(seconds=3)
    resumed = decide(spec, reread, observed, moved)
    assert resumed.checks is None and resumed.status.active_color is GREEN
    assert resumed.status.history is not None and resumed.status.history[0].time == moved
    assert resumed.status.last_flip_time == moved
    assert resumed.status.scale_down_at == moved + timedelta(seconds=30)
    assert "Promoted" in _reasons(resumed)


def test_an_intent_of_another_attempt_does_not_skip_the_checks() -> None:
    _, _, reread = _intent_written()
    restaged = _spec(activeColor="green", green={"image": "shop:3"}, prePromotionChecks=CHECKS)
    again = decide(restaged, reread, _observed(_available("shop:1"), _available("shop:3"),
                                               generation=2), NOW)
    assert again.checks is not None and again.status.active_color is BLUE


def test_abort_within_the_window_has_an_intent_too() -> None:
    decision = decide(_spec(activeColor="green", green={"image": "shop:2"}, abort=True),
                      _flipped(), _observed(_available("shop:1"), _available("shop:2")),
                      NOW + timedelta(seconds=5))
    assert decision.status.active_color is BLUE
    assert decision.intent is not None and decision.intent.active_color is GREEN
    assert decision.intent.reason == "MovingTraffic"
