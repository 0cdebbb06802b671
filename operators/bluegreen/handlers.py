"""Kopf handlers for BlueGreenRollout: read, decide, apply, write status, tell.

Level-triggered like every handler here: each run reads the rollout (fresh, because its
status is the state machine's memory), the target CommerceService and both colours'
Deployments, asks :func:`operators.bluegreen.decide.decide` what to do, applies what
:func:`operators.bluegreen.render.render` says, then writes the status: status reports
what the cluster already shows, never what is about to happen. A flip adds one write in
front, the decision's intent (reason ``MovingTraffic``, the old colour still active), so a
restarted operator knows the flip was decided; the status that names the new colour
follows the traffic objects and is dated from when they changed. The traffic objects go
first among the children: they only ever point at a colour already found Available, and
the old colour must not be scaled down before traffic has left it.

``KOMMERCE_OPERATOR_TEST_EXIT_AFTER_FLIP_WRITE=N`` (tests only) makes the process exit right
after the Nth API write of a flip, so a test can kill the operator at every step of one.

What wakes a rollout up: a change to its spec; any change to its Deployments, its preview
Service or the traffic objects (their own events, so a colour becoming Available moves
traffic within a watch round-trip, and a hand edit is put back); its CommerceService or
circuit-breaker policy changing; a one-second timer while something is in flight (progress
deadline, error-rate window, scale-down delay); a slow resync. Runs for one rollout are
serialised by a lock, so a Deployment event and the timer never decide at the same time.

See ``operators/bluegreen/render.py`` for who owns which child.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from kommerce.contracts.release import Release, release_patch
from operators.bluegreen.checks import PreviewEndpoint, ready_addresses, run_checks
from operators.bluegreen.conflict import (
    REASON as CONFLICT_REASON,
)
from operators.bluegreen.conflict import (
    conflict_message,
    rollout_conflict,
    target_of,
)
from operators.bluegreen.decide import CheckReport, Decision, Observed, decide
from operators.bluegreen.render import (
    KIND,
    RETRY_ANNOTATION,
    ROLLOUT_LABEL,
    color_deployment_name,
    preview_service_name,
    render,
)
from operators.bluegreen.spec import (
    RESOURCE,
    BlueGreenRolloutSpec,
    BlueGreenRolloutStatus,
    Color,
    RolloutPhase,
)
from operators.circuitbreaker.render import PolicyRef, policy_for_target
from operators.commerceservice.render import render as render_service
from operators.commerceservice.spec import RESOURCE as SERVICE
from operators.commerceservice.spec import CommerceServiceSpec
from operators.conditions import degraded, not_ready, progressing, set_conditions
from operators.indexes import BreakerPolicies, policies_in
from operators.kube import PLURALS, KubeError
from operators.meta import API_VERSION, FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY
from operators.metrics import reconcile_timer
from operators.runtime import BOOKKEEPING, as_body, kube
from operators.schema import InvalidSpec, parse_spec
from operators.shardlayout.lookup import shard_layout_named
from operators.shardlayout.spec import ShardLayoutSpec
from operators.workloads import deployment_progress

IN_FLIGHT = {RolloutPhase.PENDING.value, RolloutPhase.PROGRESSING.value,
             RolloutPhase.CHECKING.value}
TICK_SECONDS = 1.0
RESYNC_SECONDS = 60.0

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


EXIT_AFTER_FLIP_WRITE_ENV = "KOMMERCE_OPERATOR_TEST_EXIT_AFTER_FLIP_WRITE"
EXIT_AFTER_FLIP_WRITE_CODE = 86
_log = logging.getLogger(__name__)


class FlipWrites:
    """The API writes of one reconcile, counted while it flips traffic. With
    :data:`EXIT_AFTER_FLIP_WRITE_ENV` set to N the process exits right after the Nth, as a
    kill at that point would leave it: the test of the write order needs every step."""

    def __init__(self, flipping: bool) -> None:
        self.flipping = flipping
        self.count = 0
        self.limit = int(os.environ.get(EXIT_AFTER_FLIP_WRITE_ENV) or 0) if flipping else 0

    def done(self, what: str) -> None:
        if not self.flipping:
            return
        self.count += 1
        if self.count == self.limit:
            _log.critical(f"exiting after flip write {self.count} ({what}): "
                          f"{EXIT_AFTER_FLIP_WRITE_ENV} is set")
            logging.shutdown()
            os._exit(EXIT_AFTER_FLIP_WRITE_CODE)


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def _now() -> datetime:
    return datetime.now(UTC)


# -- index: which rollout releases which CommerceService --------------------------------

@kopf.index(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
def rollout_targets(namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta,
                    **_: Any) -> dict[tuple[str, str], str] | None:
    """(namespace, CommerceService) -> rollout, for events on objects named after the
    service. A rollout being deleted no longer claims anything."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    target = (spec.get("serviceRef") or {}).get("name")
    if not target or meta.get("deletionTimestamp"):
        return None
    return {(namespace, str(target)): name}


# -- the reconcile ----------------------------------------------------------------------

@kopf.on.resume(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.create(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.update(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.timer(RESOURCE.group, RESOURCE.version, RESOURCE.plural, interval=TICK_SECONDS,
            when=lambda status, **_: status.get("phase") in IN_FLIGHT
            or bool(status.get("scaleDownAt")))
@kopf.timer(RESOURCE.group, RESOURCE.version, RESOURCE.plural, interval=RESYNC_SECONDS,
            initial_delay=RESYNC_SECONDS, id="resync")
def reconcile(name: str, namespace: str | None, **kwargs: Any) -> None:
    """One step of the state machine; see the module docstring for what triggers it."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    reconcile_rollout(namespace, name, policies_in(breaker_policies, namespace))


def reconcile_rollout(namespace: str, name: str, policies: list[PolicyRef]) -> None:
    with _lock(namespace, name), reconcile_timer(KIND):
        try:
            _reconcile(namespace, name, policies)
        except KubeError as error:
            raise kopf.TemporaryError(f"API call failed: {error}", delay=2) from error


def _reconcile(namespace: str, name: str, policies: list[PolicyRef]) -> None:
    body = kube().get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    current_status = body.get("status") or {}
    try:
        spec = parse_spec(BlueGreenRolloutSpec, body.get("spec") or {})
    except InvalidSpec as invalid:
        _report_refused(body, current_status, generation, "InvalidSpec", str(invalid))
        return
    # One rollout per CommerceService (operators/conflicts.py): a younger one writes
    # nothing but its own status, so the two never take the colours from each other.
    conflict = rollout_conflict(name, kube().list(API_VERSION, KIND, namespace))
    if conflict is not None:
        _report_refused(body, current_status, generation, CONFLICT_REASON,
                        conflict_message(conflict, name))
        return
    target_body = kube().get(API_VERSION, SERVICE.kind, namespace, spec.service_ref.name)
    target = _target(target_body)
    deployments = {color: kube().get("apps/v1", "Deployment", namespace,
                                     color_deployment_name(spec.service_ref.name, color))
                   for color in Color}
    observed = Observed(
        generation=generation, service_found=target is not None,
        deployments={color: deployment_progress(d) for color, d in deployments.items()
                     if d is not None},
        retry=(meta.get("annotations") or {}).get(RETRY_ANNOTATION, ""))
    status = _parse_status(current_status)
    now = _now()
    decision = decide(spec, status, observed, now)
    report: CheckReport | None = None
    if decision.checks is not None and target is not None:
        assert spec.pre_promotion_checks is not None
        slices = kube().list("discovery.k8s.io/v1", "EndpointSlice", namespace,
                             f"kubernetes.io/service-name={preview_service_name(target.name)}")
        endpoint = PreviewEndpoint(target.name, namespace, target.spec.service_port,
                                   pods=ready_addresses(slices))
        report = run_checks(spec.pre_promotion_checks, decision.checks, endpoint, now)
        decision = decide(spec, status, observed, now, checks=report)

    if decision.promote_to is not None:
        kube().patch(API_VERSION, KIND, namespace, name,
                     {"spec": {"activeColor": decision.promote_to.value}})
    # The cluster first, then the status that reports it (see the module docstring).
    flipping = decision.intent is not None and decision.plan is not None \
        and target is not None
    writes = FlipWrites(flipping)
    if flipping:
        assert decision.intent is not None
        current_status = _write_status(namespace, name, current_status, decision.intent)
        writes.done("status: the flip's intent")
    if decision.plan is not None and target is not None:
        traffic = _apply(namespace, name, meta["uid"], target, target_body, decision,
                         policies, deployments, writes)
        if flipping:
            # Decided again at the moment traffic moved (the same flip: nothing else
            # changed), so history and lastFlipTime say when it did, even when an earlier
            # operator moved it and was killed before it could say so.
            decision = decide(spec, status, observed, _moved_at(traffic, now),
                              checks=report)
    _write_status(namespace, name, current_status, decision.status)
    writes.done("status: the flip done")
    for event in decision.events:
        kopf.event(as_body(body), type=event.type, reason=event.reason, message=event.message)


def _apply(namespace: str, name: str, uid: str, target: TargetService,
           target_body: dict[str, Any] | None, decision: Decision, policies: list[PolicyRef],
           live_deployments: dict[Color, dict[str, Any] | None],
           writes: FlipWrites) -> list[dict[str, Any]]:
    """Apply the plan, traffic objects first; returns them as the server now holds them."""
    assert decision.plan is not None
    base = render_service(target.name, namespace, target.spec, target.uid,
                          breaker=policy_for_target(policies, target.name),
                          shard_layout=target.shard_layout)
    rendered = render(name, uid, base, decision.plan)
    traffic = []
    for manifest in rendered.traffic:
        traffic.append(kube().apply(manifest))
        writes.done(f"{manifest['kind']} {manifest['metadata']['name']}")
    for manifest in rendered.deployments:
        kube().apply(manifest)
        writes.done(f"{manifest['kind']} {manifest['metadata']['name']}")
    if rendered.preview_service is not None:
        kube().apply(rendered.preview_service)
        writes.done(f"Service {rendered.preview_service['metadata']['name']}")
    for color, live in live_deployments.items():
        owners = (live or {}).get("metadata", {}).get("ownerReferences") or []
        if decision.plan.images.get(color) is None and any(o.get("uid") == uid
                                                           for o in owners):
            kube().delete("apps/v1", "Deployment", namespace,
                          color_deployment_name(target.name, color))
            writes.done(f"delete Deployment {color_deployment_name(target.name, color)}")
    if decision.plan.traffic is not None and target_body is not None:
        release = Release(rollout=name, active=decision.plan.traffic)
        if Release.from_annotations(target_body["metadata"].get("annotations")) != release:
            kube().patch(API_VERSION, SERVICE.kind, namespace, target.name,
                         {"metadata": {"annotations": release_patch(release)}})
            writes.done(f"CommerceService {target.name} annotations")
    return traffic


def _moved_at(traffic: Iterable[dict[str, Any]], fallback: datetime) -> datetime:
    """When the traffic objects last changed under the operator's field manager (the
    server's record, to the second): the moment a flip took effect, also when the apply
    just made was a no-op because an operator killed mid-flip had already moved them."""
    times = []
    for manifest in traffic:
        if manifest.get("kind") not in ("Service", "VirtualService"):
            continue
        for entry in manifest.get("metadata", {}).get("managedFields") or []:
            if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply" \
                    and entry.get("time") and not entry.get("subresource"):
                times.append(datetime.fromisoformat(str(entry["time"])))
    return max(times, default=fallback)


@dataclass(frozen=True)
class TargetService:
    """The CommerceService a rollout releases: what its children are rendered from."""

    name: str
    uid: str
    spec: CommerceServiceSpec
    shard_layout: ShardLayoutSpec | None = None


def _target(body: dict[str, Any] | None) -> TargetService | None:
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    try:
        spec = parse_spec(CommerceServiceSpec, body.get("spec") or {})
    except InvalidSpec:
        return None
    layout = shard_layout_named(body["metadata"]["namespace"], spec.shard_layout)
    return TargetService(body["metadata"]["name"], body["metadata"]["uid"], spec, layout)


def _parse_status(raw: dict[str, Any]) -> BlueGreenRolloutStatus:
    try:
        return BlueGreenRolloutStatus.model_validate(raw)
    except ValueError:
        return BlueGreenRolloutStatus()


def _write_status(namespace: str, name: str, current: dict[str, Any],
                  status: BlueGreenRolloutStatus) -> dict[str, Any]:
    """Merge-patch only what changed; fields the new status drops are deleted (but never
    ``status.kopf``, Kopf's own bookkeeping). Returns the status as now written, for the
    next write of the same reconcile to compare with."""
    new = status.wire()
    new.pop(BOOKKEEPING, None)
    patch: dict[str, Any] = {key: value for key, value in new.items()
                             if current.get(key) != value}
    patch |= {key: None for key in current if key not in new and key != BOOKKEEPING}
    if patch:
        kube().patch_status(API_VERSION, KIND, namespace, name, patch)
    written = {key: value for key, value in current.items() if key in new
               or key == BOOKKEEPING}
    return written | new


def _report_refused(body: dict[str, Any], current: dict[str, Any], generation: int,
                    reason: str, message: str) -> None:
    """Degraded for a reason only the user can fix (an invalid spec, another rollout owning
    the service): status and a Warning Event, nothing else written."""
    updates = [not_ready(reason, message),
               progressing(False, reason, "the operator will act once this is resolved"),
               degraded(True, reason, message)]
    status = {"observedGeneration": generation, "phase": RolloutPhase.DEGRADED.value,
              "reason": reason, "message": message[:4096],
              "conditions": set_conditions(current.get("conditions"), updates,
                                           observed_generation=generation, now=_now())}
    if any(current.get(key) != value for key, value in status.items()):
        kube().patch_status(API_VERSION, KIND, body["metadata"]["namespace"],
                            body["metadata"]["name"], status)
        kopf.event(as_body(body), type="Warning", reason=reason, message=message)


# -- deletion: give the traffic back before the colours go ------------------------------

@kopf.on.delete(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
def hand_traffic_back(body: kopf.Body, name: str, namespace: str | None, spec: kopf.Spec,
                      meta: kopf.Meta, **_: Any) -> None:
    """Remove the hand-over annotations so the CommerceService renders its own Deployment,
    Service and routes again, and hold the rollout (and so its colours, which carry the
    traffic until then) until that Deployment is Available — or the progress deadline has
    passed, so a broken service cannot block the deletion forever."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    service = str((spec.get("serviceRef") or {}).get("name") or "")
    target = kube().get(API_VERSION, SERVICE.kind, namespace, service) if service else None
    if target is None or target["metadata"].get("deletionTimestamp"):
        return
    release = Release.from_annotations(target["metadata"].get("annotations"))
    if release is not None and release.rollout != name:
        return  # another rollout carries the traffic (this one lost a conflict)
    if release is not None:
        kube().patch(API_VERSION, SERVICE.kind, namespace, service,
                     {"metadata": {"annotations": release_patch(None)}})
        kopf.event(body, type="Normal", reason="TrafficHandedBack",
                   message=f"CommerceService {service} runs its own Deployment and routes "
                           "again; the colours go once it is Available")
    progress = deployment_progress(kube().get("apps/v1", "Deployment", namespace, service))
    if progress.complete and progress.available >= 1:
        return
    deleted_at = datetime.fromisoformat(str(meta.get("deletionTimestamp")))
    deadline = int(spec.get("progressDeadlineSeconds") or 600)
    if (_now() - deleted_at).total_seconds() < deadline:
        raise kopf.TemporaryError(f"waiting for Deployment {service}: {progress.message}",
                                  delay=2)
    kopf.event(body, type="Warning", reason="HandBackTimedOut",
               message=f"Deployment {service} is not Available after {deadline}s "
                       f"({progress.message}); deleting the colours anyway")


@kopf.on.event(RESOURCE.group, RESOURCE.version, RESOURCE.plural, id="bluegreen-gone")
def release_after_deletion(event: kopf.RawEvent, name: str, namespace: str | None,
                           spec: kopf.Spec, **kwargs: Any) -> None:
    """A rollout gone without the hand-back above (its finalizer removed by hand) must not
    leave its CommerceService at 0 replicas: drop the hand-over annotations. A rollout that
    stood by for the same service (a conflict's loser) is reconciled now: it is next."""
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    if event.get("type") != "DELETED" or namespace is None:
        return
    service = str((spec.get("serviceRef") or {}).get("name") or "")
    target = kube().get(API_VERSION, SERVICE.kind, namespace, service) if service else None
    release = Release.from_annotations((target or {}).get("metadata", {}).get("annotations"))
    if release is not None and release.rollout == name:
        kube().patch(API_VERSION, SERVICE.kind, namespace, service,
                     {"metadata": {"annotations": release_patch(None)}})
    for other in kube().list(API_VERSION, KIND, namespace):
        other_name = other["metadata"]["name"]
        if other_name != name and service and target_of(other) == service:
            reconcile_rollout(namespace, other_name, policies_in(breaker_policies, namespace))


# -- wake-ups from the objects around the rollout ----------------------------------------

def _rollouts_of(meta: kopf.Meta, namespace: str,
                 rollout_targets: kopf.Index[tuple[str, str], str]) -> list[str]:
    labels = meta.get("labels") or {}
    if labels.get(ROLLOUT_LABEL):
        return [str(labels[ROLLOUT_LABEL])]
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND:
            return [str(ref["name"])]
    # The CommerceService may have written its Service or routes over the rollout's. Every
    # rollout naming it is woken: each one re-reads which of them owns the service
    # (operators/bluegreen/conflict.py), and only the owner writes.
    return sorted(set(rollout_targets.get((namespace, str(meta.get("name"))), [])))


def _on_related_event(meta: kopf.Meta, namespace: str | None, **kwargs: Any) -> None:
    rollout_targets: kopf.Index[tuple[str, str], str] = kwargs["rollout_targets"]
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    if namespace is None:
        return
    for rollout in _rollouts_of(meta, namespace, rollout_targets):
        reconcile_rollout(namespace, rollout, policies_in(breaker_policies, namespace))


def _register_watchers() -> None:
    """Colour Deployments, the preview Service and the traffic objects (labelled as the
    operator's), and the CommerceServices themselves."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"),
                              ("networking.istio.io/v1", "VirtualService"),
                              ("networking.istio.io/v1", "DestinationRule")):
        group, _, version = api_version.rpartition("/")
        kopf.on.event(group, version, PLURALS[kind], labels=labels,
                      id=f"bluegreen-{PLURALS[kind]}")(_on_related_event)
    kopf.on.event(SERVICE.group, SERVICE.version, SERVICE.plural,
                  id="bluegreen-commerceservices")(_on_related_event)


_register_watchers()
