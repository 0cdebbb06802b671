"""Kopf handlers for CommerceService: apply what ``render`` says, report status, repair drift.

Level-triggered: every run reads the resource, renders its whole footprint and server-side
applies it; nothing is remembered between runs that the cluster does not hold (the in-memory
index is a cache of the watch stream, rebuilt on restart). Applying an unchanged footprint
writes nothing, so a second run with no change is a no-op on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from kommerce.contracts.release import Release
from operators.bluegreen.handover import (
    HANDED_OVER_KINDS,
    hand_over,
    released_by,
    status_deployment_name,
    with_release_condition,
)
from operators.circuitbreaker.render import policy_for_target
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.render import CHILD_KINDS, RoutedService, render, route_conflicts
from operators.commerceservice.reports import DeploymentReports, ServiceView
from operators.commerceservice.spec import RESOURCE, CommerceServiceSpec
from operators.commerceservice.status import (
    MissingReference,
    build_status,
    invalid_spec_status,
)
from operators.conditions import (
    degraded,
    find_condition,
    is_condition_true,
    set_conditions,
    summary,
)
from operators.drift import differs
from operators.indexes import BreakerPolicies, policies_in
from operators.kube import PLURALS, KubeError, Manifest, apply_all
from operators.meta import API_VERSION, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY
from operators.metrics import reconcile_timer
from operators.repair import RepairFailed, apply_or_replace, repair
from operators.route_tables import route_table_publisher
from operators.runtime import as_body, kube
from operators.schema import InvalidSpec, parse_spec
from operators.shardlayout.lookup import shard_layout_named
from operators.shardlayout.spec import ShardLayoutSpec

KIND = "CommerceService"
RECHECK_SECONDS = 15
REPAIR_FAILED = "DriftRepairFailed"
REPORTS = DeploymentReports()


# -- index: the watch stream's view of every CommerceService, by namespace ---------------
# (the CircuitBreakerPolicy index that three kinds read is in operators/indexes.py)

@kopf.index(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
def commerce_services(namespace: str | None, name: str, uid: str, spec: kopf.Spec,
                      annotations: Mapping[str, str], meta: kopf.Meta,
                      **_: Any) -> dict[str, RoutedService | None]:
    """Parsed specs by namespace: the route table and drift repair read them without a GET."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    release = Release.from_annotations(annotations)
    try:
        return {namespace: RoutedService(
            name, uid, parse_spec(CommerceServiceSpec, dict(spec)),
            active_color=release.active if release is not None else None,
            created=str(meta.get("creationTimestamp") or ""))}
    except InvalidSpec:
        return {namespace: None}


def _services_in(index: kopf.Index[str, RoutedService | None],
                 namespace: str) -> list[RoutedService]:
    return [entry for entry in index.get(namespace, []) if entry is not None]


# Services whose required Secrets or ConfigMaps are missing: not Ready, so the gateway is
# not given their routes (it would send shoppers to Pods that cannot start).
_unroutable: set[tuple[str, str]] = set()


def _routable_in(index: kopf.Index[str, RoutedService | None],
                 namespace: str) -> list[RoutedService]:
    return [entry for entry in _services_in(index, namespace)
            if (namespace, entry.name) not in _unroutable]


def _set_routable(namespace: str, name: str, routable: bool) -> bool:
    """Record whether ``name`` may be in the route table; True when that changed."""
    key = (namespace, name)
    if routable == (key not in _unroutable):
        return False
    if routable:
        _unroutable.discard(key)
    else:
        _unroutable.add(key)
    return True


# -- the reconcile ----------------------------------------------------------------------

@kopf.on.resume(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.create(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.update(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.timer(RESOURCE.group, RESOURCE.version, RESOURCE.plural, interval=RECHECK_SECONDS,
            initial_delay=RECHECK_SECONDS, idle=RECHECK_SECONDS,
            when=lambda status, **_: _is_degraded(status))
def reconcile(body: kopf.Body, name: str, namespace: str | None, uid: str, spec: kopf.Spec,
              meta: kopf.Meta, status: kopf.Status, **kwargs: Any) -> None:
    """Render and apply every child, prune what is no longer rendered, publish routes, and
    write status. The timer re-runs it while ``Degraded``, so a Secret created later clears
    the condition without anyone touching the resource; ``Ready`` follows the Deployment's
    own events (see :func:`_refresh_status_from_deployment`)."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    commerce_services: kopf.Index[str, RoutedService | None] = kwargs["commerce_services"]
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    generation = int(meta.get("generation") or 0)
    with reconcile_timer(KIND):
        try:
            parsed = parse_spec(CommerceServiceSpec, dict(spec))
        except InvalidSpec as invalid:
            _write_status(namespace, name, status, invalid_spec_status(
                generation=generation, message=str(invalid),
                previous_conditions=status.get("conditions"), now=_now()))
            kopf.event(body, type="Warning", reason="InvalidSpec", message=str(invalid))
            raise kopf.PermanentError(str(invalid)) from invalid

        breaker = policy_for_target(policies_in(breaker_policies, namespace), name)
        try:
            layout = shard_layout_named(namespace, parsed.shard_layout)
        except KubeError as error:
            raise kopf.TemporaryError(f"reading the shard layout failed: {error}",
                                      delay=10) from error
        children = render(name, namespace, parsed, uid, breaker=breaker, shard_layout=layout)
        # A BlueGreenRollout carrying this service's traffic writes its Service and routes
        # and runs its Pods (see operators/bluegreen/render.py).
        release = Release.from_annotations(meta.get("annotations"))
        if release is not None:
            children = hand_over(children, release.rollout)
        try:
            applied = apply_all(children, apply=apply_or_replace)
            _prune(namespace, name, uid, children,
                   keep=HANDED_OVER_KINDS if release is not None else frozenset())
        except KubeError as error:
            _report_repair_failed(dict(body), namespace, name,
                                  f"applying the children failed: {error.message}",
                                  reason="ApplyFailed")
            raise kopf.TemporaryError(f"applying children failed: {error}", delay=10) \
                from error
        try:
            missing = _missing_references(namespace, parsed)
        except KubeError as error:
            raise kopf.TemporaryError(f"reading references failed: {error}", delay=10) \
                from error
        _set_routable(namespace, name, not missing)
        publisher = route_table_publisher()
        publisher.attach(lambda ns: _routable_in(commerce_services, ns))
        publisher.mark_dirty(namespace)

        deployment: Manifest | None = next(m for m in applied if m["kind"] == "Deployment")
        if release is not None:
            deployment = kube().get("apps/v1", "Deployment", namespace,
                                    status_deployment_name(name, release))
        with REPORTS.lock(namespace, name):
            # The status this process last wrote is newer than the one this event carried.
            known = REPORTS.view(namespace, name, uid)
            current = known.status if known is not None else dict(status)
            deployment = REPORTS.newest(namespace, name, deployment)
            new_status = _compose_status(namespace, name, parsed, deployment,
                                         ServiceView(uid, generation, release, current),
                                         commerce_services, missing=missing)
            if _write_status(namespace, name, current, new_status):
                kopf.event(body, type="Normal", reason="Reconciled",
                           message=f"applied {len(children)} children for generation "
                                   f"{generation}")
            REPORTS.seen(namespace, name, ServiceView(uid, generation, release,
                                                      current | new_status))
            if deployment is not None:
                REPORTS.written(namespace, name, deployment)


def _prune(namespace: str, name: str, uid: str, children: list[Manifest],
           keep: frozenset[str] = frozenset()) -> None:
    """Delete children this resource owns that ``render`` no longer returns (the HPA after
    autoscaling was switched off, the PDB after the budget was). Children are named after
    their owner, so only the kinds missing from this render need a look; ``keep`` names
    kinds another writer (a blue-green rollout) looks after."""
    rendered = {child["kind"] for child in children} | keep
    for api_version, kind in CHILD_KINDS:
        if kind in rendered:
            continue
        live = kube().get(api_version, kind, namespace, name)
        owners = (live or {}).get("metadata", {}).get("ownerReferences", [])
        if any(ref.get("uid") == uid for ref in owners):
            kube().delete(api_version, kind, namespace, name)


def _missing_references(namespace: str, spec: CommerceServiceSpec) -> list[MissingReference]:
    missing = []
    for kind, references in (("Secret", spec.referenced_secrets()),
                             ("ConfigMap", spec.referenced_config_maps())):
        for ref_name, optional in sorted(references.items()):
            if not optional and kube().get("v1", kind, namespace, ref_name) is None:
                missing.append(MissingReference(kind, ref_name))
    return missing


def _write_status(namespace: str, name: str, current: Mapping[str, Any],
                  new_status: dict[str, Any]) -> bool:
    """Patch status only when it changed, so a no-op reconcile writes nothing at all."""
    if all(current.get(key) == value for key, value in new_status.items()):
        return False
    kube().patch_status(API_VERSION, KIND, namespace, name, new_status)
    return True


def _is_degraded(status: kopf.Status) -> bool:
    """Only a Degraded service is re-checked on a timer (a Secret created later clears it).
    A timer on every service not yet Ready would make Kopf add a finalizer to each new one
    and take it off again once Ready: two extra writes per service, which at a few hundred
    services is a large share of what the API server is asked to do."""
    return any(c.get("type") == "Degraded" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _now() -> datetime:
    return datetime.now(UTC)


# -- drift repair and status from the children's own events ------------------------------

def _owner_name(meta: kopf.Meta) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return str(ref["name"])
    return None


def _on_child_event(event: kopf.RawEvent, body: kopf.Body, meta: kopf.Meta,
                    namespace: str | None,
                    commerce_services: kopf.Index[str, RoutedService | None],
                    breaker_policies: BreakerPolicies) -> None:
    """A child changed or vanished: if it no longer matches what its owner renders, put it
    back (a hand edit of an owned field, a hand delete). Kubernetes' own additions (defaults,
    status, fields owned by other managers) are not drift."""
    owner = _owner_name(meta)
    if owner is None or namespace is None:
        return
    entry = next((e for e in _services_in(commerce_services, namespace) if e.name == owner),
                 None)
    if entry is None:
        return  # owner gone (garbage collection will follow) or its spec is invalid
    breaker = policy_for_target(policies_in(breaker_policies, namespace), owner)
    kind, child_name = body.get("kind"), meta.get("name")
    children = _rendered(namespace, entry, breaker)
    rollout = released_by(meta.get("labels"))
    if rollout is not None:
        children = hand_over(children, rollout)
    desired = next((m for m in children
                    if m["kind"] == kind and m["metadata"]["name"] == child_name), None)
    if desired is None:
        return
    deleted = event.get("type") == "DELETED"
    if deleted or differs(desired, dict(body)):
        owner_ref = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {
            "name": owner, "namespace": namespace, "uid": entry.uid}}
        try:
            repair(desired)
        except RepairFailed as failed:
            _report_repair_failed(owner_ref, namespace, owner, str(failed))
            return
        what = "recreated" if deleted else "restored"
        kopf.event(as_body(owner_ref), type="Normal", reason="DriftRepaired",
                   message=f"{kind} {child_name} was {'deleted' if deleted else 'edited'} "
                           f"by hand; {what} from the spec")


def _report_repair_failed(owner_ref: dict[str, Any], namespace: str, owner: str,
                          message: str, reason: str = REPAIR_FAILED) -> None:
    """A repair the API server refused: a Warning Event and ``Degraded`` in status. The
    reconcile re-runs every RECHECK_SECONDS while Degraded, applies the children again and
    clears the condition once they are what the spec renders."""
    message = f"{message}; retrying every {RECHECK_SECONDS}s"
    kopf.event(as_body(owner_ref), type="Warning", reason=reason, message=message)
    with REPORTS.lock(namespace, owner):
        view = REPORTS.view(namespace, owner, owner_ref["metadata"]["uid"]) or \
            _read_view(namespace, owner)
        if view is None:
            return
        conditions = set_conditions(view.status.get("conditions"),
                                    [degraded(True, reason, message)],
                                    observed_generation=view.generation, now=_now())
        patch = {"conditions": conditions, **summary(conditions)}
        try:
            kube().patch_status(API_VERSION, KIND, namespace, owner, patch)
        except KubeError:
            return  # the object is going away, or the API is down: the next event retries
        REPORTS.seen(namespace, owner, ServiceView(view.uid, view.generation, view.release,
                                                   view.status | patch))


# The last footprint rendered for each service, for drift checks: every event of every child
# would otherwise render the whole footprint again. Valid while the index still holds the
# same entry (a new spec is a new entry), the same breaker policy applies and the shard
# layout it names (read again for each check; only the product service has one) is the same.
_Footprint = tuple[RoutedService, CircuitBreakerPolicySpec | None, ShardLayoutSpec | None,
                   list[Manifest]]
_footprints: dict[tuple[str, str], _Footprint] = {}


def _rendered(namespace: str, entry: RoutedService, breaker: CircuitBreakerPolicySpec | None
              ) -> list[Manifest]:
    layout = shard_layout_named(namespace, entry.spec.shard_layout)
    cached = _footprints.get((namespace, entry.name))
    if cached is not None and cached[0] is entry and cached[1] == breaker and \
            cached[2] == layout:
        return cached[3]
    children = render(entry.name, namespace, entry.spec, entry.uid, breaker=breaker,
                      shard_layout=layout)
    _footprints[(namespace, entry.name)] = (entry, breaker, layout, children)
    return children


def _register_child_watchers() -> None:
    """One event handler per child kind, limited to objects this operator manages."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    for api_version, kind in CHILD_KINDS:
        group, _, version = api_version.rpartition("/")
        plural = PLURALS[kind]
        kopf.on.event(group, version, plural, labels=labels,
                      id=f"drift-{plural}")(_child_event_handler)


def _released_service(meta: kopf.Meta) -> str | None:
    """The CommerceService whose Pods a colour Deployment of a blue-green rollout runs."""
    if any(ref.get("kind") == "BlueGreenRollout" for ref in meta.get("ownerReferences") or []):
        return (meta.get("labels") or {}).get(LABEL_INSTANCE)
    return None


def _child_event_handler(event: kopf.RawEvent, body: kopf.Body, meta: kopf.Meta,
                         namespace: str | None, **kwargs: Any) -> None:
    commerce_services: kopf.Index[str, RoutedService | None] = kwargs["commerce_services"]
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    _on_child_event(event, body, meta, namespace, commerce_services, breaker_policies)
    if body.get("kind") == "Deployment":
        _refresh_status_from_deployment(body, meta, namespace, commerce_services)


def _refresh_status_from_deployment(deployment: kopf.Body, meta: kopf.Meta,
                                    namespace: str | None,
                                    commerce_services: kopf.Index[str, RoutedService | None],
                                    ) -> None:
    """Ready/Progressing and readyReplicas follow the Deployment as its Pods come and go
    (the active colour's, while a blue-green rollout runs the Pods)."""
    owner = _owner_name(meta) or _released_service(meta)
    if owner is None or namespace is None:
        return
    if not any(e.name == owner for e in _services_in(commerce_services, namespace)):
        return
    REPORTS.observe(namespace, owner, deployment)
    _report_deployment(dict(deployment), namespace, owner, commerce_services)


def _report_deployment(deployment: dict[str, Any], namespace: str, owner: str,
                       commerce_services: kopf.Index[str, RoutedService | None]) -> None:
    with REPORTS.lock(namespace, owner):
        if REPORTS.unchanged(namespace, owner, deployment):
            return
        if REPORTS.defer(namespace, owner, deployment, lambda newest: _report_deployment(
                newest, namespace, owner, commerce_services)):
            return
        _write_status_from_deployment(deployment, namespace, owner, commerce_services)


def _write_status_from_deployment(deployment: dict[str, Any], namespace: str, owner: str,
                                  commerce_services: kopf.Index[str, RoutedService | None]
                                  ) -> None:
    entry = next((e for e in _services_in(commerce_services, namespace) if e.name == owner),
                 None)
    if entry is None:
        return  # deleted, or its spec turned invalid, since the Deployment event came
    view = REPORTS.view(namespace, owner, entry.uid) or _read_view(namespace, owner)
    if view is None:
        return
    if deployment["metadata"].get("name") != status_deployment_name(owner, view.release):
        return
    new_status = _compose_status(namespace, owner, entry.spec, deployment, view,
                                 commerce_services)
    if any(view.status.get(key) != value for key, value in new_status.items()):
        kube().patch_status(API_VERSION, KIND, namespace, owner, new_status)
        _announce_ready(view.status, new_status, namespace, owner, view.uid)
    REPORTS.seen(namespace, owner, ServiceView(view.uid, view.generation, view.release,
                                               view.status | new_status))
    REPORTS.written(namespace, owner, deployment)


def _compose_status(namespace: str, name: str, spec: CommerceServiceSpec,
                    deployment: dict[str, Any] | None, view: ServiceView,
                    commerce_services: kopf.Index[str, RoutedService | None],
                    missing: list[MissingReference] | None = None) -> dict[str, Any]:
    """The whole status for ``name`` from its Deployment, its references, route conflicts
    and release, over the status ``view`` holds: the one judgement both writers make."""
    conflicts = [c for c in route_conflicts(_services_in(commerce_services, namespace))
                 if name in c.services]
    if missing is None:
        missing = _missing_references(namespace, spec)
        if _set_routable(namespace, name, not missing):
            route_table_publisher().mark_dirty(namespace)
    new_status = build_status(
        generation=view.generation, namespace=namespace, deployment=deployment,
        missing=missing, conflicts=conflicts,
        previous_conditions=view.status.get("conditions"), now=_now())
    new_status["conditions"] = with_release_condition(
        new_status["conditions"], view.release, service=name,
        observed_generation=view.generation, now=_now())
    return new_status


def _read_view(namespace: str, owner: str) -> ServiceView | None:
    """The service as the API server has it, when this process has not written its status
    yet (just started, or the service is new to it)."""
    current = kube().get(API_VERSION, KIND, namespace, owner)
    if current is None:
        return None
    metadata = current["metadata"]
    return ServiceView(str(metadata.get("uid")), int(metadata.get("generation") or 0),
                       Release.from_annotations(metadata.get("annotations")),
                       current.get("status") or {})


def _announce_ready(old: Mapping[str, Any], new: Mapping[str, Any], namespace: str,
                    name: str, uid: str) -> None:
    """A Normal Event when the service becomes Ready, and again whenever its replica count
    changes while Ready (an HPA scaling it): its words are the ones status holds, so the
    Event never names a count status has since left behind."""
    if not is_condition_true(new.get("conditions"), "Ready"):
        return
    was_ready = is_condition_true(old.get("conditions"), "Ready")
    counts = (new.get("readyReplicas"), new.get("replicas"))
    if was_ready and counts == (old.get("readyReplicas"), old.get("replicas")):
        return
    involved = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {
        "name": name, "namespace": namespace, "uid": uid}}
    condition = find_condition(new.get("conditions"), "Ready") or {}
    message = str(condition.get("message") or
                  f"{counts[0] or 0} of {counts[1] or 0} replicas are available")
    kopf.event(as_body(involved), type="Normal", reason="Scaled" if was_ready else "Ready",
               message=message)


@kopf.on.event(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
def republish_routes_on_delete(event: kopf.RawEvent, namespace: str | None, name: str | None,
                               **_: Any) -> None:
    """Children go with the owner by garbage collection; the shared route table is
    re-rendered without the deleted service."""
    if event.get("type") == "DELETED" and namespace:
        route_table_publisher().mark_dirty(namespace)
        if name:
            REPORTS.forget(namespace, name)
            _unroutable.discard((namespace, name))
            _footprints.pop((namespace, name), None)


_register_child_watchers()
