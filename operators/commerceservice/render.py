"""CommerceService -> the manifests of its children; pure, no I/O.

``render`` returns every child the operator applies (server-side apply, one field manager)
for one CommerceService. Output is deterministic — same input, byte-identical manifests —
so a reconcile that changes nothing writes nothing.

Ownership decisions that the handlers rely on:

* With autoscaling on, the Deployment carries no ``spec.replicas``: the HPA owns the count
  and a reconcile must not reset it. Hand edits are still bounded by the HPA's min/max.
* Children that the spec no longer asks for (an HPA after ``autoscaling.enabled: false``)
  are not in the list; the apply layer deletes owned objects of :data:`CHILD_KINDS` that
  ``render`` did not return.
* The gateway's route table and the callers' circuit-breaker ConfigMap are shared by many
  resources; they are rendered by :func:`render_route_table` (here) and
  ``operators.circuitbreaker.render`` from all of them at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kommerce.contracts.breaker import BREAKERS_CONFIGMAP
from kommerce.contracts.mounts import BREAKERS_DIR, ROUTE_TABLE_DIR, SECRETS_DIR, SHARD_MAP_DIR
from kommerce.contracts.release import Color
from kommerce.contracts.route_table import (
    ROUTE_TABLE_CONFIGMAP,
    ROUTE_TABLE_KEY,
    ROUTE_TABLE_VERSION_ANNOTATION,
    Route,
    RouteTable,
)
from kommerce.contracts.shard_map import SHARD_MAP_KEY
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.commerceservice.spec import (
    CONNECTION_ENV,
    CommerceServiceSpec,
    Component,
    KeyRef,
    Probe,
    ValueSource,
)
from operators.conflicts import Claimant
from operators.istio import Destination, destination_rule, traffic_settings, virtual_service
from operators.meta import (
    LABEL_COLOR,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_VERSION,
    MANAGED_BY,
    PART_OF,
    check_resource_name,
    image_version,
    object_meta,
    owner_reference,
    selector_labels,
    service_host,
    shared_owner_reference,
    standard_labels,
)
from operators.schema import parse_spec
from operators.shardlayout.spec import ShardLayoutSpec, shard_map_name

KIND = "CommerceService"
CONTAINER_PORT_NAME = "http"

CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
)
"""(apiVersion, kind) of everything ``render`` may return, for pruning and for RBAC."""


@dataclass(frozen=True)
class _Child:
    """What every child of one CommerceService shares."""

    name: str
    namespace: str
    spec: CommerceServiceSpec
    uid: str
    shard_layout: ShardLayoutSpec | None = None

    @property
    def app(self) -> str:
        return self.spec.component.value

    @property
    def labels(self) -> dict[str, str]:
        labels = standard_labels(self.app, self.name, self.app)
        version = image_version(self.spec.image)
        if version:
            labels[LABEL_VERSION] = version
        return labels

    @property
    def selector(self) -> dict[str, str]:
        return selector_labels(self.app, self.name)

    def metadata(self, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        return object_meta(self.name, self.namespace, self.labels,
                           [owner_reference(KIND, self.name, self.uid)], annotations)


def render(name: str, namespace: str, spec: CommerceServiceSpec | Mapping[str, Any], uid: str,
           *, breaker: CircuitBreakerPolicySpec | None = None,
           shard_layout: ShardLayoutSpec | None = None) -> list[dict[str, Any]]:
    """Every child manifest of one CommerceService, in apply order.

    ``spec`` may be the raw spec from the API (validated here, raising
    ``operators.schema.InvalidSpec``) or an already-parsed model. ``breaker`` is the
    CircuitBreakerPolicy that targets this service, if any; its limits, retries and timeout
    are merged into the DestinationRule and VirtualService. ``shard_layout`` is the spec of
    the ShardLayout that ``spec.shardLayout`` names (None while it does not exist): its
    shards' database Secrets are mounted beside its map.
    """
    check_resource_name(name)
    parsed = spec if isinstance(spec, CommerceServiceSpec) else parse_spec(CommerceServiceSpec,
                                                                            spec)
    child = _Child(name, namespace, parsed, uid,
                   shard_layout if parsed.shard_layout is not None else None)
    children = [service_account(child), deployment(child), service(child)]
    if parsed.autoscaling.enabled:
        children.append(horizontal_pod_autoscaler(child))
    if parsed.disruption_budget.enabled:
        children.append(pod_disruption_budget(child))
    settings = traffic_settings(breaker)
    host = service_host(name, namespace)
    children.append(virtual_service(
        child.metadata(), host, [route.path_prefix for route in parsed.routes],
        [Destination(host, parsed.service_port)], settings))
    children.append(destination_rule(child.metadata(), host, settings))
    return children


def service_account(child: _Child) -> dict[str, Any]:
    """The Pods' identity (Istio's mTLS identity too); no API token, services never call
    the Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child.metadata(),
        "automountServiceAccountToken": False,
    }


def _probe(probe: Probe) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.path, "port": CONTAINER_PORT_NAME, "scheme": "HTTP"},
        "initialDelaySeconds": probe.initial_delay_seconds,
        "periodSeconds": probe.period_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
        "successThreshold": 1,
    }


def _key_ref(ref: KeyRef) -> dict[str, Any]:
    return {"name": ref.name, "key": ref.key, "optional": ref.optional}


def _value_from(source: ValueSource) -> dict[str, Any]:
    if source.secret_key_ref is not None:
        return {"secretKeyRef": _key_ref(source.secret_key_ref)}
    assert source.config_map_key_ref is not None  # guaranteed by ValueSource's rule
    return {"configMapKeyRef": _key_ref(source.config_map_key_ref)}


def container_env(child: _Child) -> list[dict[str, Any]]:
    """Operator-set variables first, then the user's (in their order, as ``$(VAR)``
    references may depend on it), then one variable per declared connection."""
    spec = child.spec
    env: list[dict[str, Any]] = [
        {"name": "KOMMERCE_COMPONENT", "value": spec.component.value},
        {"name": "KOMMERCE_SERVICE_NAME", "value": child.name},
        {"name": "KOMMERCE_NAMESPACE",
         "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
        {"name": "KOMMERCE_PORT", "value": str(spec.port)},
        {"name": "KOMMERCE_CIRCUIT_BREAKERS_DIR", "value": BREAKERS_DIR},
        # Empty unless a BlueGreenRollout's colour Deployment labelled the Pod.
        {"name": "KOMMERCE_COLOR", "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": f"metadata.labels['{LABEL_COLOR}']"}}},
        {"name": "OTEL_SERVICE_NAME", "value": child.name},
    ]
    if spec.component is Component.GATEWAY:
        env.append({"name": "KOMMERCE_ROUTE_TABLE",
                    "value": f"{ROUTE_TABLE_DIR}/{ROUTE_TABLE_KEY}"})
    if spec.shard_layout is not None:
        env.extend([
            {"name": "KOMMERCE_SHARD_MAP_PATH", "value": f"{SHARD_MAP_DIR}/{SHARD_MAP_KEY}"},
            {"name": "KOMMERCE_SECRETS_DIR", "value": SECRETS_DIR},
        ])
    env.extend({"name": variable.name, "value": variable.value} for variable in spec.env)
    for field_name, variable in CONNECTION_ENV.items():
        source: ValueSource | None = getattr(spec.connections, field_name)
        if source is not None:
            env.append({"name": variable, "valueFrom": _value_from(source)})
    return env


def _env_from(child: _Child) -> list[dict[str, Any]]:
    sources = []
    for source in child.spec.env_from:
        entry: dict[str, Any] = {}
        if source.secret_ref is not None:
            entry["secretRef"] = {"name": source.secret_ref.name,
                                  "optional": source.secret_ref.optional}
        if source.config_map_ref is not None:
            entry["configMapRef"] = {"name": source.config_map_ref.name,
                                     "optional": source.config_map_ref.optional}
        if source.prefix:
            entry["prefix"] = source.prefix
        sources.append(entry)
    return sources


def _volumes(child: _Child) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A writable /tmp (the root filesystem is read-only) and the hot-reloaded ConfigMaps.

    The ConfigMaps are mounted as volumes, not env, because the kubelet refreshes mounted
    files in place: services reload breaker settings and the gateway its routes without a
    restart. ``optional`` lets Pods start before the first policy or route exists.
    """
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "circuit-breakers",
         "configMap": {"name": BREAKERS_CONFIGMAP, "optional": True}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "circuit-breakers", "mountPath": BREAKERS_DIR, "readOnly": True},
    ]
    if child.spec.component is Component.GATEWAY:
        volumes.append({"name": "routes",
                        "configMap": {"name": ROUTE_TABLE_CONFIGMAP, "optional": True}})
        mounts.append({"name": "routes", "mountPath": ROUTE_TABLE_DIR, "readOnly": True})
    if child.spec.shard_layout is not None:
        volumes.append({"name": "shard-map",
                        "configMap": {"name": shard_map_name(child.spec.shard_layout)}})
        mounts.append({"name": "shard-map", "mountPath": SHARD_MAP_DIR, "readOnly": True})
        databases = _shard_databases(child.shard_layout)
        if databases is not None:
            volumes.append(databases)
            mounts.append({"name": "shard-databases", "mountPath": SECRETS_DIR,
                           "readOnly": True})
    return volumes, mounts


def _shard_databases(layout: ShardLayoutSpec | None) -> dict[str, Any] | None:
    """One projected volume with each shard's database key at ``<secret>/<key>``, where
    the shard map's reader looks for it (``services.core.shardmap``).

    Optional per Secret: the ShardLayout does not publish a map naming a Secret that is
    missing (it reports it), so a missing one can only be a shard the map in force does not
    use yet, and must not keep every product Pod from starting.
    """
    if layout is None:
        return None
    sources = [{"secret": {"name": secret, "optional": True,
                           "items": [{"key": key, "path": f"{secret}/{key}"} for key in keys]}}
               for secret, keys in layout.database_secrets().items()]
    return {"name": "shard-databases", "projected": {"sources": sources}}


PRE_STOP_SECONDS = 5


def deployment(child: _Child) -> dict[str, Any]:
    """The service's Pods: rolling update that never drops below the wanted count
    (maxSurge 1, maxUnavailable 0), probes, resources, hardened security context, and a
    spread over nodes so one node going away does not take every replica."""
    spec = child.spec
    volumes, mounts = _volumes(child)
    container: dict[str, Any] = {
        "name": spec.component.value,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "ports": [{"name": CONTAINER_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "env": container_env(child),
        "resources": {
            "requests": {"cpu": spec.resources.requests.cpu,
                         "memory": spec.resources.requests.memory},
            "limits": {"cpu": spec.resources.limits.cpu, "memory": spec.resources.limits.memory},
        },
        "livenessProbe": _probe(spec.probes.liveness),
        "readinessProbe": _probe(spec.probes.readiness),
        # A Pod told to stop leaves its Service's endpoints at the same moment as it gets
        # SIGTERM; kube-proxy and the gateways' connection pools learn of it a moment later.
        # Serving on through that moment is what makes a scale-down drop no request.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if spec.args:
        container["args"] = list(spec.args)
    env_from = _env_from(child)
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "serviceAccountName": child.name,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": child.selector},
        }],
        "containers": [container],
        "volumes": volumes,
    }
    deployment_spec: dict[str, Any] = {}
    if not spec.autoscaling.enabled:
        deployment_spec["replicas"] = spec.replicas
    deployment_spec |= {
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": child.selector},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": dict(sorted(child.labels.items())),
                "annotations": {
                    "prometheus.io/path": "/metrics",
                    "prometheus.io/port": str(spec.port),
                    "prometheus.io/scrape": "true",
                },
            },
            "spec": pod_spec,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child.metadata(),
        "spec": deployment_spec,
    }


def service(child: _Child) -> dict[str, Any]:
    """A ClusterIP Service; the port is named ``http`` so Istio treats it as HTTP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child.metadata(),
        "spec": {
            "type": "ClusterIP",
            "selector": child.selector,
            "ports": [{
                "name": "http",
                "appProtocol": "http",
                "protocol": "TCP",
                "port": child.spec.service_port,
                "targetPort": CONTAINER_PORT_NAME,
            }],
        },
    }


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {"type": "Resource", "resource": {
        "name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}}


def horizontal_pod_autoscaler(child: _Child) -> dict[str, Any]:
    """autoscaling/v2 HPA on CPU (and memory when asked) utilisation of the requests."""
    scaling = child.spec.autoscaling
    metrics = [_utilization("cpu", scaling.target_cpu_utilization_percentage)]
    if scaling.target_memory_utilization_percentage is not None:
        metrics.append(_utilization("memory", scaling.target_memory_utilization_percentage))
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child.name},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    if scaling.behavior is not None:
        behavior = scaling.behavior.wire()
        if behavior:
            spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child.metadata(),
        "spec": spec,
    }


def pod_disruption_budget(child: _Child) -> dict[str, Any]:
    """policy/v1 PDB. Unhealthy Pods may always be evicted, so a crash-looping Pod never
    blocks a node drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child.metadata(),
        "spec": {
            "maxUnavailable": child.spec.disruption_budget.max_unavailable,
            "selector": {"matchLabels": child.selector},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# --- the gateway's route table --------------------------------------------------------


@dataclass(frozen=True)
class RoutedService:
    """One CommerceService as the route table needs it. ``active_color`` is set while a
    blue-green rollout carries its traffic, so that a flip changes the table (and its
    version) and the gateway's reload log shows which colour it now routes to."""

    name: str
    uid: str
    spec: CommerceServiceSpec
    active_color: Color | None = None
    created: str = ""  # metadata.creationTimestamp: the oldest claimant of a prefix has it

    @property
    def claimant(self) -> Claimant:
        return Claimant(self.created, self.name)


@dataclass(frozen=True)
class RouteConflict:
    """Two or more services claim the same path prefix; the oldest (then first by name)
    wins, by the rule every kind shares (``operators.conflicts``)."""

    path_prefix: str
    services: tuple[str, ...]

    @property
    def message(self) -> str:
        winner, *losers = self.services
        return (f"path prefix {self.path_prefix} is declared by {', '.join(self.services)}; "
                f"the gateway sends it to {winner} (the oldest), remove it from "
                f"{', '.join(losers)}")


def _claims(services: Sequence[RoutedService]) -> dict[str, list[RoutedService]]:
    claims: dict[str, list[RoutedService]] = {}
    for routed in sorted(services, key=lambda s: s.claimant):
        if routed.spec.component is Component.GATEWAY:
            continue
        for route in routed.spec.routes:
            claims.setdefault(route.path_prefix, []).append(routed)
    return claims


def route_conflicts(services: Sequence[RoutedService]) -> list[RouteConflict]:
    """Path prefixes claimed by more than one service in the namespace (CEL cannot see
    across objects, so the handler reports these as ``Degraded`` on the losers)."""
    return [RouteConflict(prefix, tuple(s.name for s in owners))
            for prefix, owners in sorted(_claims(services).items()) if len(owners) > 1]


def route_table(namespace: str, services: Sequence[RoutedService]) -> RouteTable:
    """The route table (:mod:`kommerce.contracts.route_table`): one route per claimed prefix,
    its oldest claimant's, longest prefix first so the gateway takes the first match;
    ``version`` is a content hash the gateway logs when it reloads."""
    routes = []
    for prefix, owners in _claims(services).items():
        routed = owners[0]
        route = next(r for r in routed.spec.routes if r.path_prefix == prefix)
        routes.append(Route.model_construct(
            path_prefix=prefix,
            methods=frozenset(m.value for m in route.methods),
            auth_required=route.auth_required,
            rate_limit_per_minute=route.rate_limit_per_minute,
            service=routed.name,
            component=routed.spec.component.value,
            upstream=f"http://{service_host(routed.name, namespace)}:{routed.spec.service_port}",
            active_color=routed.active_color or None))
    return RouteTable.written(routes)


def render_route_table(namespace: str, services: Sequence[RoutedService]) -> dict[str, Any]:
    """The gateway's route table ConfigMap for every CommerceService in ``namespace``.

    Every service is a (non-controller) owner, so the ConfigMap disappears with the last of
    them; any one of them changing re-renders it whole.
    """
    table = route_table(namespace, services)
    owners = [shared_owner_reference(KIND, s.name, s.uid)
              for s in sorted(services, key=lambda s: s.name)]
    labels = {LABEL_NAME: Component.GATEWAY.value, LABEL_COMPONENT: "route-table",
              LABEL_PART_OF: PART_OF, LABEL_MANAGED_BY: MANAGED_BY}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(ROUTE_TABLE_CONFIGMAP, namespace, labels, owners,
                                {ROUTE_TABLE_VERSION_ANNOTATION: table.version}),
        "data": {ROUTE_TABLE_KEY: table.to_json()},
    }
