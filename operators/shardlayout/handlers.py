"""Kopf handlers for ShardLayout: validate, publish the versioned shard map, report.

The apiserver already refuses what a CEL rule can see (a category in two shards, a default
shard that is not a shard, duplicate shard names). What it cannot see is whether each
shard's database Secret exists with the named key; a layout pointing at a missing one is
reported ``Degraded`` and **not** published, so the product service keeps routing by the
map in force (``status.mapVersion`` keeps naming it) until the Secret appears — a timer
looks again while the layout is Degraded. Only key names are looked at, never values.

A valid layout is rendered by ``operators.shardlayout.render.render_shard_map`` into the
ConfigMap ``<layout>-shard-map``; the product service's ``services.core.shardmap`` watcher
hot-reloads it and refuses a map whose content changed without its version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from operators.conditions import (
    degraded,
    not_ready,
    progressing,
    ready,
    set_conditions,
    summary,
)
from operators.kube import KubeError
from operators.meta import API_VERSION
from operators.metrics import reconcile_timer
from operators.runtime import kube
from operators.schema import InvalidSpec, parse_spec
from operators.shardlayout.render import render_shard_map
from operators.shardlayout.spec import RESOURCE, ReshardPhase, ShardLayoutSpec, shard_map_name

KIND = "ShardLayout"
VERSION_ANNOTATION = "kommerce.io/shard-map-version"
DATABASES_ANNOTATION = "kommerce.io/shard-databases"
SERVICE_KIND = "CommerceService"
RECHECK_SECONDS = 5


def _missing_secrets(namespace: str, spec: ShardLayoutSpec) -> list[str]:
    """``Secret name (key k)`` for every shard database that cannot be read."""
    missing = []
    for shard in spec.shards:
        secret = kube().get("v1", "Secret", namespace, shard.database.name)
        if secret is None:
            missing.append(f"Secret {shard.database.name} (shard {shard.name})")
        elif shard.database.key not in (secret.get("data") or {}):
            missing.append(f"key {shard.database.key} in Secret {shard.database.name} "
                           f"(shard {shard.name})")
    return missing


def _version_in_force(namespace: str, name: str) -> str | None:
    live = kube().get("v1", "ConfigMap", namespace, shard_map_name(name))
    return ((live or {}).get("metadata", {}).get("annotations") or {}).get(VERSION_ANNOTATION)


@kopf.on.resume(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.create(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.on.update(RESOURCE.group, RESOURCE.version, RESOURCE.plural)
@kopf.timer(RESOURCE.group, RESOURCE.version, RESOURCE.plural, interval=RECHECK_SECONDS,
            initial_delay=RECHECK_SECONDS, when=lambda status, **_: _is_degraded(status))
def reconcile(body: kopf.Body, name: str, namespace: str | None, uid: str, spec: kopf.Spec,
              meta: kopf.Meta, status: kopf.Status, **_: Any) -> None:
    """Publish the map when every shard's Secret is there; otherwise say which is missing
    and leave the map in force alone."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    generation = int(meta.get("generation") or 0)
    now = datetime.now(UTC)
    with reconcile_timer(KIND):
        try:
            parsed = parse_spec(ShardLayoutSpec, dict(spec))
        except InvalidSpec as invalid:
            _report(body, namespace, name, status, generation, now, problem=("InvalidSpec",
                    f"{invalid}; the shard map in force stays"), version=None)
            raise kopf.PermanentError(str(invalid)) from invalid
        try:
            missing = _missing_secrets(namespace, parsed)
            if missing:
                version = _version_in_force(namespace, name)
                stays = f"shard map {version} stays in force" if version \
                    else "no shard map is published"
                message = (f"{', '.join(missing)} not found in namespace {namespace}: create "
                           f"it or fix spec.shards[].database; {stays}")
                _report(body, namespace, name, status, generation, now,
                        problem=("SecretNotFound", message), version=version)
                return
            config_map = render_shard_map(name, namespace, parsed, uid)
            kube().apply(config_map)
            _wake_product_services(namespace, name, parsed)
        except KubeError as error:
            raise kopf.TemporaryError(f"API call failed: {error}", delay=5) from error
        version = config_map["metadata"]["annotations"][VERSION_ANNOTATION]
        if _report(body, namespace, name, status, generation, now, problem=None,
                   version=version) and status.get("mapVersion") != version:
            kopf.event(body, type="Normal", reason="ShardMapPublished",
                       message=f"shard map {version} published in ConfigMap "
                               f"{shard_map_name(name)}")


def _wake_product_services(namespace: str, name: str, spec: ShardLayoutSpec) -> None:
    """Stamp the shard databases on every CommerceService naming this layout, when they
    changed: the stamp is what makes its operator render again and mount a new shard's
    Secret. A category moving between shards needs no stamp (nor a restart); the map
    ConfigMap alone carries it."""
    stamp = ",".join(f"{secret}/{key}" for secret, keys in spec.database_secrets().items()
                     for key in keys)
    for service in kube().list(API_VERSION, SERVICE_KIND, namespace):
        if (service.get("spec") or {}).get("shardLayout") != name:
            continue
        annotations = service["metadata"].get("annotations") or {}
        if annotations.get(DATABASES_ANNOTATION) != stamp:
            kube().patch(API_VERSION, SERVICE_KIND, namespace, service["metadata"]["name"],
                         {"metadata": {"annotations": {DATABASES_ANNOTATION: stamp}}})


def _report(body: kopf.Body, namespace: str, name: str, status: kopf.Status, generation: int,
            now: datetime, *, problem: tuple[str, str] | None, version: str | None) -> bool:
    """Write the status if it changed (and an Event for a new problem); True if written."""
    if problem is None:
        message = f"shard map {version} is published in ConfigMap {shard_map_name(name)}"
        updates = [ready("Published", message), progressing(False, "Published", message),
                   degraded(False, "AsExpected", "nothing needs attention")]
    else:
        reason, message = problem
        updates = [not_ready(reason, message), progressing(False, reason, message),
                   degraded(True, reason, message)]
    conditions = set_conditions(status.get("conditions"), updates,
                                observed_generation=generation, now=now)
    # Stable only while the map in force is the spec's: a layout that cannot be published
    # is Blocked, whatever map is still in force.
    phase = ReshardPhase.STABLE if problem is None else ReshardPhase.BLOCKED
    new_status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase.value,
        "conditions": conditions,
        **summary(conditions),
    }
    if version is not None:
        new_status |= {"mapVersion": version, "configMap": shard_map_name(name)}
    if all(status.get(key) == value for key, value in new_status.items()):
        return False
    kube().patch_status(API_VERSION, KIND, namespace, name, new_status)
    was_degraded = _is_degraded(status)
    if problem is not None and not (was_degraded and _reason(status) == problem[0]):
        kopf.event(body, type="Warning", reason=problem[0], message=problem[1])
    return True


def _is_degraded(status: Any) -> bool:
    return any(c.get("type") == "Degraded" and c.get("status") == "True"
               for c in (status or {}).get("conditions") or [])


def _reason(status: Any) -> str | None:
    return next((c.get("reason") for c in (status or {}).get("conditions") or []
                 if c.get("type") == "Degraded"), None)
