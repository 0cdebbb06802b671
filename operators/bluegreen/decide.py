"""The blue-green state machine: spec + last status + what the cluster shows -> what to do.

Pure, so every transition is a unit test. The status is the rollout's only memory — which
colour carries traffic, which one abort returns to, when the old colour may be scaled down,
the promotion in flight with its start time, error-rate sample and check verdict — so an
operator restarted mid-flip reads it back and carries on exactly where it was.

Phases and what moves them (``desired`` is ``spec.activeColor``, ``active`` the colour that
carries traffic, ``stable`` the colour abort returns to):

* ``Pending`` -> ``Progressing``: the first reconcile deploys ``desired`` at full size; the
  CommerceService's own Pods carry traffic until it is Available (``TrafficTakenOver``).
* ``Healthy``: traffic on ``desired``, which is Available. After a flip the previous colour
  stays at full size for ``scaleDownDelaySeconds`` (the rollback window: ``stable`` is still
  the previous colour), then is scaled to ``previewReplicas`` (``ScaledDown``).
* ``Paused``: a new image is staged on the idle colour, awaiting promotion. With
  ``autoPromotionEnabled`` the operator promotes it itself by setting ``spec.activeColor``.
* ``Progressing``: ``desired`` differs from ``active``; the target colour is brought to full
  size and traffic waits until it is Available at its current image (``WaitingForAvailable``).
* ``Checking``: the target is Available; pre-promotion checks run against the preview
  Service. A pass flips traffic (``Promoted``); a failure is ``Degraded``.
* ``Degraded``: the target missed ``progressDeadlineSeconds`` (it may still become Available
  later, and then the flip goes on), a check failed (this attempt is over: change the spec
  or ``kommerce rollout promote`` again to retry), the active colour's image was edited
  (only a flip changes what serves), or the CommerceService is missing. Traffic untouched.
* ``Aborted``: ``spec.abort`` is set. Within the rollback window traffic returns to
  ``stable`` at once (``RolledBack``); otherwise any promotion stops where it is.

A flip (or a rollback, or taking traffic over) changes ``status.activeColor``. Status must
never claim more than the cluster shows, so a flip is written in three steps: the
``intent`` (phase ``Progressing``, reason :data:`MOVING`, ``activeColor`` still the colour
that carries traffic), then the DestinationRule, VirtualService and Service pointed at the
new colour, then the status that says it moved, dated from when the traffic objects
changed. An operator killed between any two writes leaves status behind the cluster, never
ahead of it; the next reconcile decides the same flip again (checks that already passed for
this attempt are not run twice) and finishes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from operators.bluegreen.render import ColorPlan
from operators.bluegreen.spec import (
    HISTORY_LIMIT,
    BlueGreenRolloutSpec,
    BlueGreenRolloutStatus,
    CheckState,
    Color,
    ColorImages,
    ErrorSample,
    FlipRecord,
    Promotion,
    RolloutPhase,
)
from operators.conditions import (
    Condition,
    ConditionUpdate,
    degraded,
    not_ready,
    progressing,
    ready,
    set_conditions,
)
from operators.workloads import DeploymentProgress, RolloutState

Phase = RolloutPhase


@dataclass(frozen=True)
class Observed:
    """What the handler read from the cluster for one reconcile."""

    generation: int
    service_found: bool
    deployments: Mapping[Color, DeploymentProgress]
    retry: str = ""  # value of the retry annotation: a new value starts a new attempt

    def progress(self, color: Color) -> DeploymentProgress:
        return self.deployments.get(color) or DeploymentProgress(
            RolloutState.MISSING, "the Deployment does not exist yet")


CHECK_FAILED = "PrePromotionCheckFailed"
MOVING = "MovingTraffic"
"""Reason of the intent written before a flip's traffic objects: the flip is decided (its
checks passed) and traffic is being moved; ``activeColor`` is still the old colour."""


@dataclass(frozen=True)
class CheckRequest:
    """Pre-promotion checks the handler must run before deciding again."""

    attempt: str
    target: Color
    baseline: ErrorSample | None


@dataclass(frozen=True)
class CheckReport:
    """What the checks found: ``passed`` None while an error-rate window is still open."""

    passed: bool | None
    message: str
    baseline: ErrorSample | None = None
    reason: str = CHECK_FAILED  # of the Degraded phase and Event when passed is False


@dataclass(frozen=True)
class RolloutEvent:
    """A Kubernetes Event to post on the rollout."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """The next status, what to run, what to tell, and whether to ask for checks first."""

    status: BlueGreenRolloutStatus
    plan: ColorPlan | None  # None: render nothing (the CommerceService is missing)
    events: tuple[RolloutEvent, ...] = ()
    checks: CheckRequest | None = None  # run them, then call decide() again with the report
    promote_to: Color | None = None  # auto-promotion: set spec.activeColor to this colour
    # A flip: the status to write before the traffic objects move (the old colour still
    # active, reason MOVING). The handler then applies the plan and decides again with the
    # moment traffic moved as ``now``, so ``status`` and its history carry that time.
    intent: BlueGreenRolloutStatus | None = None


def _image(status: BlueGreenRolloutStatus, color: Color) -> str | None:
    return getattr(status.images, color.value) if status.images is not None else None


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Step:
    """The state being built up by one decision; turned into a status at the end."""

    spec: BlueGreenRolloutSpec
    previous: BlueGreenRolloutStatus
    observed: Observed
    now: datetime
    active: Color | None
    stable: Color | None
    window: datetime | None
    images: dict[Color, str | None]
    history: list[FlipRecord]
    promotion: Promotion | None
    last_flip: datetime | None
    target: Color | None = None  # colour being promoted (kept at full size)
    phase: Phase = Phase.PENDING
    reason: str = "Pending"
    message: str = ""
    events: list[RolloutEvent] = field(default_factory=list)
    promote_to: Color | None = None
    intent: BlueGreenRolloutStatus | None = None

    def ready(self, color: Color | None, *, full_size: bool) -> bool:
        """Fully Available at the image this colour should run (and, for a flip target, at
        the full replica count)."""
        if color is None:
            return False
        progress = self.observed.progress(color)
        return (progress.complete and progress.image == self.images[color]
                and progress.desired >= 1
                and (not full_size or progress.desired == self.spec.replicas))

    def progress_message(self, color: Color) -> str:
        progress = self.observed.progress(color)
        if progress.complete and progress.image != self.images[color]:
            return f"it still runs {progress.image}"
        if progress.complete and progress.desired != self.spec.replicas:
            return f"it is being scaled from {progress.desired} to {self.spec.replicas} Pods"
        return progress.message

    def set(self, phase: Phase, reason: str, message: str) -> None:
        self.phase, self.reason, self.message = phase, reason, message

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(RolloutEvent("Warning" if warning else "Normal", reason, message))

    def describe(self, color: Color | None) -> str:
        if color is None:
            return "the CommerceService's own Deployment"
        return f"{color.value} ({self.images[color]})"


def decide(spec: BlueGreenRolloutSpec, status: BlueGreenRolloutStatus, observed: Observed,
           now: datetime, checks: CheckReport | None = None) -> Decision:
    """The next step for one rollout. Returns a Decision with ``checks`` set (and nothing
    else worth writing) when pre-promotion checks must run first; the handler runs them
    and calls again with their report."""
    active = status.active_color
    images = {color: spec.image_for(color) for color in Color}
    if active is not None and _image(status, active):
        images[active] = _image(status, active)  # only a flip changes what serves
    step = _Step(spec, status, observed, now, active, status.stable_color or active,
                 status.scale_down_at, images, list(status.history or []), status.promotion,
                 status.last_flip_time)

    if not observed.service_found:
        step.set(Phase.DEGRADED, "ServiceNotFound",
                 f"CommerceService {spec.service_ref.name} not found: create it or fix "
                 "spec.serviceRef; nothing is deployed or moved until it exists")
        return _finish(step, plan=False)

    _close_window_on_restage(step)
    if step.window is not None and now >= step.window:
        _scale_down(step)
    if spec.abort:
        _abort(step)
    else:
        if active is None or spec.active_color is not active:
            request = _promote(step, spec.active_color, checks)
            if request is not None:
                return Decision(_status(step), None, checks=request)
        else:
            _steady(step)
    return _finish(step, plan=True)


# -- the transitions --------------------------------------------------------------------


def _close_window_on_restage(step: _Step) -> None:
    """A new image on the colour kept for rollback means it can no longer roll back."""
    stable, active = step.stable, step.active
    if step.window is None or stable is None or stable is active:
        return
    staged = step.spec.image_for(stable)
    if staged is not None and staged != _image(step.previous, stable):
        step.event("RollbackWindowClosed",
                   f"{stable.value} has a new image {staged}: traffic can no longer roll back "
                   f"to {_image(step.previous, stable)}")
        step.stable, step.window = active, None


def _scale_down(step: _Step) -> None:
    """The rollback window is over: the previous colour goes to previewReplicas."""
    if step.stable is not None and step.stable is not step.active:
        step.event("ScaledDown",
                   f"{step.stable.value} scaled to {step.spec.preview_replicas} Pods after "
                   f"scaleDownDelaySeconds; {step.describe(step.active)} is now stable")
    step.stable, step.window = step.active, None


def _abort(step: _Step) -> None:
    step.promotion = None
    active, stable = step.active, step.stable
    if active is not None and step.window is not None and stable is not None \
            and stable is not active:
        if step.ready(stable, full_size=False):
            _flip(step, stable, "Abort")
            step.set(Phase.ABORTED, "RolloutAborted",
                     f"spec.abort is set: traffic returned to {step.describe(stable)}; set "
                     "spec.abort to false to promote again, or set spec.activeColor to "
                     f"{stable.value} to give the release up")
            return
        step.set(Phase.PROGRESSING, "AbortWaiting",
                 f"spec.abort is set: waiting for {stable.value} to be Available again "
                 f"({step.progress_message(stable)}) before traffic returns to it")
        return
    step.window = None
    step.stable = active
    step.set(Phase.ABORTED, "RolloutAborted",
             f"spec.abort is set: traffic stays on {step.describe(active)}; set spec.abort "
             "to false to try again")


def _steady(step: _Step) -> None:
    """Traffic is where the spec wants it; report, and maybe auto-promote a staged image."""
    active = step.active
    assert active is not None
    if step.promotion is not None:
        step.event("PromotionCancelled",
                   f"spec.activeColor is {active.value} again: promotion of "
                   f"{step.promotion.target_color.value} cancelled, traffic stays")
        step.promotion = None
    preview = active.other
    staged = step.spec.image_for(preview)
    left = next((record.from_image for record in step.history[:1]
                 if record.from_color is preview), None)
    is_staged = staged is not None and staged not in (step.images[active], left)
    newly_staged = is_staged and staged != _image(step.previous, preview)
    spec_image = step.spec.image_for(active)
    if step.spec.auto_promotion_enabled and newly_staged and step.window is None:
        step.promote_to = preview
        step.target = preview
        step.set(Phase.PROGRESSING, "AutoPromotion",
                 f"{preview.value} has a new image {staged}: promoting it "
                 "(autoPromotionEnabled)")
    elif spec_image is not None and spec_image != step.images[active]:
        step.set(Phase.DEGRADED, "ActiveImageChanged",
                 f"spec.{active.value}.image is {spec_image} but {active.value} carries traffic "
                 f"with {step.images[active]}: only a flip changes what serves. Set the image "
                 f"on {preview.value} and promote it, or set spec.{active.value}.image back")
    elif is_staged:
        step.set(Phase.PAUSED, "PreviewStaged",
                 f"{preview.value} is staged with {staged} beside {step.describe(active)}: "
                 f"set spec.activeColor to {preview.value} (kommerce rollout promote) to move "
                 "traffic")
    else:
        message = f"traffic on {step.describe(active)}"
        if step.window is not None and step.stable is not None and step.stable is not active:
            message += (f"; {step.describe(step.stable)} kept at full size until "
                        f"{_fmt(step.window)} for an instant rollback")
        step.set(Phase.HEALTHY, "Healthy", message)


def _needs_checks(step: _Step) -> bool:
    checks = step.spec.pre_promotion_checks
    return checks is not None and (bool(checks.http) or checks.error_rate is not None)


def _promote(step: _Step, target: Color, checks: CheckReport | None) -> CheckRequest | None:
    """Move traffic to ``target`` once it is Available and checked; a CheckRequest means
    'run the checks and ask again'."""
    spec, active = step.spec, step.active
    takeover = active is None
    rollback = (not takeover and step.window is not None and step.stable is target)
    kind = ("TakeOver" if takeover else "Rollback" if rollback
            else "AutoPromote" if spec.auto_promotion_enabled else "Promote")
    step.target = target
    image = step.images[target]
    attempt = f"{target.value}={image}@{step.observed.generation}/{step.observed.retry}"
    if step.promotion is None or step.promotion.attempt != attempt:
        step.promotion = Promotion(attempt=attempt, target_color=target, target_image=image,
                                   started_at=step.now)
    promotion = step.promotion
    stays = f"traffic stays on {step.describe(active)}"

    if promotion.checks is CheckState.FAILED:
        step.set(Phase.DEGRADED, promotion.check_reason or CHECK_FAILED,
                 f"{promotion.check_message}; {stays}. Retry with kommerce rollout promote, "
                 "or set spec.activeColor back")
        return None
    if not step.ready(target, full_size=True):
        waited = (step.now - promotion.started_at).total_seconds()
        why = step.progress_message(target)
        if waited > spec.progress_deadline_seconds:
            step.set(Phase.DEGRADED, "ProgressDeadlineExceeded",
                     f"{target.value} ({image}) is not Available after "
                     f"{spec.progress_deadline_seconds}s: {why}; {stays}")
        else:
            step.set(Phase.PROGRESSING, "WaitingForAvailable",
                     f"waiting for {target.value} ({image}) to be Available: {why}; {stays}")
        return None
    # Killed between the intent and the end of the flip: the checks of this very attempt
    # already passed, and traffic may have moved; finish the flip instead of asking again.
    decided = (step.previous.reason == MOVING and step.previous.promotion is not None
               and step.previous.promotion.attempt == attempt)
    if _needs_checks(step) and not (takeover or rollback or decided):
        if checks is None:
            step.set(Phase.CHECKING, "RunningPrePromotionChecks",
                     f"checking {target.value} ({image}) through the preview Service")
            return CheckRequest(attempt, target, promotion.error_baseline)
        if checks.passed is None:
            step.promotion = promotion.model_copy(update={
                "checks": CheckState.SAMPLING, "check_message": checks.message,
                "error_baseline": checks.baseline})
            step.set(Phase.CHECKING, "SamplingErrorRate", f"{checks.message}; {stays}")
            return None
        if checks.passed is False:
            step.promotion = promotion.model_copy(update={
                "checks": CheckState.FAILED, "check_message": checks.message,
                "check_reason": checks.reason})
            step.set(Phase.DEGRADED, checks.reason,
                     f"{checks.message}; {stays}. Retry with kommerce rollout promote, or set "
                     "spec.activeColor back")
            step.event(checks.reason, f"{checks.message}; {stays}", warning=True)
            return None
    _flip(step, target, kind)
    _steady(step)
    return None


def _flip(step: _Step, target: Color, kind: str) -> None:
    """Traffic moves to ``target``. The intent (this flip decided, nothing moved yet) is
    kept for the handler to write before the traffic objects."""
    previous, spec = step.active, step.spec
    kept = (step.phase, step.reason, step.message)
    moving = (f"moving traffic from {step.describe(previous)} to {step.describe(target)} "
              f"({kind}); activeColor changes once the Service and routes point at "
              f"{target.value}")
    step.set(Phase.PROGRESSING, MOVING, moving)
    step.intent = _status(step)
    step.set(*kept)
    if previous is None:
        step.event("TrafficTakenOver",
                   f"{step.describe(target)} is Available and now carries the traffic of "
                   f"CommerceService {spec.service_ref.name}")
        step.stable, step.window = target, None
    else:
        step.history.insert(0, FlipRecord(
            time=step.now, from_color=previous, to_color=target,
            from_image=step.images[previous], to_image=step.images[target], reason=kind))
        del step.history[HISTORY_LIMIT:]
        moved = f"traffic moved from {step.describe(previous)} to {step.describe(target)}"
        if kind in ("Abort", "Rollback"):
            step.stable, step.window = target, None
            step.event("RolledBack", moved, warning=kind == "Abort")
        elif spec.scale_down_delay_seconds > 0:
            step.stable = previous
            step.window = step.now + timedelta(seconds=spec.scale_down_delay_seconds)
            step.event("Promoted", f"{moved}; {previous.value} stays at full size until "
                                   f"{_fmt(step.window)}")
        else:
            step.stable, step.window = target, None
            step.event("Promoted", moved)
    step.active = target
    step.target = None
    step.promotion = None
    step.last_flip = step.now


# -- the result -------------------------------------------------------------------------


def _plan(step: _Step) -> ColorPlan:
    full = {color for color in (step.active, step.target) if color is not None}
    if step.window is not None and step.stable is not None:
        full.add(step.stable)
    if step.spec.abort and step.active is not None:
        full = {step.active} | ({step.stable} if step.window and step.stable else set())
    replicas = {color: step.spec.replicas if color in full else step.spec.preview_replicas
                for color in Color}
    anchor = step.active or step.target or step.spec.active_color
    return ColorPlan(images=dict(step.images), replicas=replicas, preview=anchor.other,
                     traffic=step.active)


def _conditions(step: _Step) -> list[ConditionUpdate]:
    phase, reason, message = step.phase, step.reason, step.message
    if phase in (Phase.HEALTHY, Phase.PAUSED):
        updates = [progressing(False, "RolloutComplete" if phase is Phase.HEALTHY
                               else "PreviewStaged", message),
                   degraded(False, "AsExpected", "nothing needs attention")]
        if step.ready(step.active, full_size=False):
            updates.insert(0, ready("Available", message))
        else:
            assert step.active is not None
            updates.insert(0, not_ready("ActiveUnavailable",
                                        f"{step.active.value} serves traffic but is not fully "
                                        f"Available: {step.progress_message(step.active)}"))
        return updates
    if phase in (Phase.DEGRADED, Phase.ABORTED):
        return [not_ready(reason, message), progressing(False, reason, message),
                degraded(True, reason, message)]
    return [not_ready(reason, message), progressing(True, reason, message),
            degraded(False, "AsExpected", "nothing needs attention")]


def _status(step: _Step) -> BlueGreenRolloutStatus:
    generation = step.observed.generation
    plan_preview = (step.active or step.target or step.spec.active_color).other
    return BlueGreenRolloutStatus(
        observed_generation=generation,
        conditions=[Condition.model_validate(condition) for condition in set_conditions(
            [c.wire() for c in step.previous.conditions or []], _conditions(step),
            observed_generation=generation, now=step.now)],
        phase=step.phase,
        reason=step.reason,
        message=step.message[:4096],
        active_color=step.active,
        preview_color=plan_preview if step.active is not None else None,
        stable_color=step.stable,
        images=ColorImages(blue=step.images[Color.BLUE], green=step.images[Color.GREEN]),
        last_flip_time=step.last_flip,
        scale_down_at=step.window,
        promotion=step.promotion,
        history=step.history or None,
    )


def _finish(step: _Step, *, plan: bool) -> Decision:
    status = _status(step)
    events = list(step.events)
    changed = (step.previous.phase, step.previous.reason) != (step.phase, step.reason)
    if changed and all(event.reason != step.reason for event in events):
        warning = step.phase in (Phase.DEGRADED, Phase.ABORTED)
        events.append(RolloutEvent("Warning" if warning else "Normal", step.reason,
                                   step.message))
    return Decision(status, _plan(step) if plan else None, tuple(events),
                    promote_to=step.promote_to, intent=step.intent)
