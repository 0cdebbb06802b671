"""Kopf handlers for CircuitBreakerPolicy: publish callers' settings, wake the target, report.

One policy has two outputs. The callers' client-breaker settings go into the namespace's
shared ConfigMap (``kommerce-circuit-breakers``, one ``<target>.json`` per governed
service), rendered from every policy in the namespace at once. The mesh settings are merged
into the target's DestinationRule and VirtualService by whoever writes them — the
CommerceService, or its BlueGreenRollout (both colour subsets) — because Istio allows one of
each per host; this handler stamps the target with :data:`POLICY_ANNOTATION` so it
re-renders, then reads the routes back and reports ``Ready`` once they carry the policy.

Deleting a policy needs no finalizer: its ``DELETED`` event re-renders the ConfigMap without
its file and re-stamps the target, which re-renders its routes with the defaults (or the
next policy by name). Nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from kommerce.contracts.breaker import BREAKERS_CONFIGMAP
from operators.circuitbreaker.render import PolicyRef, render_client_breakers
from operators.circuitbreaker.spec import RESOURCE, CircuitBreakerPolicySpec
from operators.circuitbreaker.status import (
    POLICY_ANNOTATION,
    build_status,
    policy_stamp,
    settings_in_force,
)
from operators.commerceservice.spec import RESOURCE as SERVICE
from operators.conditions import degraded, not_ready, progressing, set_conditions, summary
from operators.indexes import BreakerPolicies, policies_in
from operators.kube import KubeError
from operators.meta import API_VERSION
from operators.metrics import reconcile_timer
from operators.runtime import as_body, kube
from operators.schema import InvalidSpec, parse_spec

KIND = "CircuitBreakerPolicy"
ISTIO = "networking.istio.io/v1"
RECHECK_SECONDS = 10
MERGE_CHECK_SECONDS = 1


def publish(namespace: str, policies: list[PolicyRef]) -> set[str]:
    """Client settings for every governed target that exists, and a stamp on every
    CommerceService in the namespace naming the policy that governs it now (or none).
    Returns the names of the namespace's CommerceServices."""
    services = kube().list(API_VERSION, SERVICE.kind, namespace)
    existing = {service["metadata"]["name"] for service in services
                if not service["metadata"].get("deletionTimestamp")}
    config_map = render_client_breakers(namespace, policies, existing)
    if config_map["data"]:
        kube().apply(config_map)
    else:
        kube().delete("v1", "ConfigMap", namespace, BREAKERS_CONFIGMAP)
    for service in services:
        meta = service["metadata"]
        wanted = policy_stamp(policies, meta["name"])
        if (meta.get("annotations") or {}).get(POLICY_ANNOTATION) != wanted:
            kube().patch(API_VERSION, SERVICE.kind, namespace, meta["name"],
                         {"metadata": {"annotations": {POLICY_ANNOTATION: wanted}}})
    return existing


@kopf.on.resume(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.create(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.update(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.timer(RESOURCE.group, RESOURCE.version, RESOURCE.plural, interval=MERGE_CHECK_SECONDS,
            when=lambda status, **_: _is_merging(status))
@kopf.timer(RESOURCE.group, RESOURCE.version, RESOURCE.plural, interval=RECHECK_SECONDS,
            initial_delay=RECHECK_SECONDS, id="recheck",
            when=lambda status, **_: not _is_ready(status) and not _is_merging(status))
def reconcile(body: kopf.Body, name: str, namespace: str | None, spec: kopf.Spec,
              meta: kopf.Meta, status: kopf.Status, **kwargs: Any) -> None:
    """Publish, stamp, and report. While the target's routes do not carry the policy yet
    (its reconcile is a watch round-trip away) a one-second timer looks again; a slower one
    picks up a target created after its policy."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    generation = int(meta.get("generation") or 0)
    with reconcile_timer(KIND):
        try:
            parsed = parse_spec(CircuitBreakerPolicySpec, dict(spec))
        except InvalidSpec as invalid:
            _invalid(body, namespace, name, status, generation, str(invalid))
            raise kopf.PermanentError(str(invalid)) from invalid
        try:
            _report(body, namespace, name, status, generation, parsed,
                    policies_in(breaker_policies, namespace))
        except KubeError as error:
            kopf.event(body, type="Warning", reason="ApiCallFailed", message=error.message)
            raise kopf.TemporaryError(f"API call failed: {error}", delay=5) from error


def _report(body: Mapping[str, Any], namespace: str, name: str, status: Mapping[str, Any],
            generation: int, parsed: CircuitBreakerPolicySpec,
            policies: list[PolicyRef]) -> None:
    """Publish, read the target's routes back, write status; a Warning Event when the
    policy turns to a problem (target missing, another policy owning the target)."""
    target = parsed.target_ref.name
    existing = publish(namespace, policies)
    found = target in existing
    in_force = found and settings_in_force(
        parsed, kube().get(ISTIO, "DestinationRule", namespace, target),
        kube().get(ISTIO, "VirtualService", namespace, target))
    new_status = build_status(
        name=name, namespace=namespace, spec=parsed, policies=policies, target_found=found,
        in_force=in_force, generation=generation,
        previous_conditions=status.get("conditions"), now=datetime.now(UTC))
    if not _write_status(namespace, name, status, new_status):
        return
    if _is_ready(new_status) and not _is_ready(status):
        kopf.event(as_body(body), type="Normal", reason="InForce",
                   message=f"circuit breaking for {target} is in force")
    problem = _degraded_reason(new_status)
    if problem is not None and problem != _degraded_reason(status):
        message = next(c["message"] for c in new_status["conditions"]
                       if c["type"] == "Degraded")
        kopf.event(as_body(body), type="Warning", reason=problem, message=message)


def refresh_policies_of(namespace: str, service: str,
                        policies: list[PolicyRef]) -> None:
    """Re-report every policy targeting ``service`` (it was created or deleted): a policy
    whose target is gone must not stay ``Ready``."""
    for policy in policies:
        if policy.spec.target_ref.name != service:
            continue
        body = kube().get(API_VERSION, KIND, namespace, policy.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            continue
        _report(body, namespace, policy.name, body.get("status") or {},
                int(body["metadata"].get("generation") or 0), policy.spec, policies)


@kopf.on.event(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
def forget_deleted_policy(event: kopf.RawEvent, namespace: str | None, uid: str | None,
                          **kwargs: Any) -> None:
    """A deleted policy's settings leave the ConfigMap and its target's routes."""
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    if event.get("type") != "DELETED" or namespace is None:
        return
    publish(namespace, policies_in(breaker_policies, namespace, without_uid=uid))


def _degraded_reason(status: Any) -> str | None:
    return next((c.get("reason") for c in (status or {}).get("conditions") or []
                 if c.get("type") == "Degraded" and c.get("status") == "True"), None)


def _is_merging(status: Any) -> bool:
    return any(c.get("type") == "Progressing" and c.get("status") == "True"
               for c in (status or {}).get("conditions") or [])


def _is_ready(status: Any) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (status or {}).get("conditions") or [])


def _write_status(namespace: str, name: str, current: Any, new_status: dict[str, Any]) -> bool:
    if all(current.get(key) == value for key, value in new_status.items()):
        return False
    kube().patch_status(API_VERSION, KIND, namespace, name, new_status)
    return True


def _invalid(body: kopf.Body, namespace: str, name: str, status: kopf.Status, generation: int,
             message: str) -> None:
    updates = [not_ready("InvalidSpec", message),
               progressing(False, "InvalidSpec", "the operator will act once the spec is fixed"),
               degraded(True, "InvalidSpec", message)]
    conditions = set_conditions(status.get("conditions"), updates,
                                observed_generation=generation, now=datetime.now(UTC))
    _write_status(namespace, name, status, {"observedGeneration": generation,
                                            "conditions": conditions, **summary(conditions)})
    kopf.event(body, type="Warning", reason="InvalidSpec", message=message)


@kopf.on.event(SERVICE.group, SERVICE.version, SERVICE.plural, id="circuitbreaker-stamp")
def stamp_new_service(event: kopf.RawEvent, name: str, namespace: str | None, meta: kopf.Meta,
                      **kwargs: Any) -> None:
    """A CommerceService created after its policy is stamped at once, so the stamp is
    always there before anything (such as an operator restart) compares it; one deleted
    takes its policies out of force (status, Event, and its file in the ConfigMap)."""
    breaker_policies: BreakerPolicies = kwargs["breaker_policies"]
    if namespace is None:
        return
    if event.get("type") == "DELETED":
        refresh_policies_of(namespace, name, policies_in(breaker_policies, namespace))
        return
    if event.get("type") != "ADDED":
        return
    wanted = policy_stamp(policies_in(breaker_policies, namespace), name)
    if (meta.get("annotations") or {}).get(POLICY_ANNOTATION) != wanted:
        kube().patch(API_VERSION, SERVICE.kind, namespace, name,
                     {"metadata": {"annotations": {POLICY_ANNOTATION: wanted}}})
