"""CommerceService: one commerce component (user, product, ... gateway) and its footprint.

The model is the source of the CRD schema (``python -m operators.crdgen``) and of the
operator's own validation; :data:`RESOURCE` names the kind for the generator and handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from operators.conditions import ResourceStatus
from operators.resources import CustomResource, PrinterColumn, status_columns
from operators.schema import (
    CelRule,
    ConfigKey,
    KubeModel,
    ObjectName,
    Quantity,
    nested,
)
from operators.shardlayout.spec import shard_map_name
from operators.units import parse_quantity


class Component(StrEnum):
    """Which commerce component the service is; decides its role labels and gateway wiring."""

    USER = "user"
    PRODUCT = "product"
    SEARCH = "search"
    ORDER = "order"
    PAYMENT = "payment"
    REVIEW = "review"
    SHIPPING = "shipping"
    GATEWAY = "gateway"


class HttpMethod(StrEnum):
    """An HTTP method a route accepts."""

    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"
    OPTIONS = "OPTIONS"


class PullPolicy(StrEnum):
    """When the kubelet pulls the image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


def _fits(request: str | None, limit: str | None) -> bool:
    return request is None or limit is None or parse_quantity(request) <= parse_quantity(limit)


def _quantity_rule(resource: str) -> str:
    # isQuantity first: a malformed quantity gets its own field's error alone, not a second
    # one from a failed quantity() call.
    request, limit = f"string(self.requests.{resource})", f"string(self.limits.{resource})"
    return (f"!has(self.requests.{resource}) || !has(self.limits.{resource}) || "
            f"!isQuantity({request}) || !isQuantity({limit}) || "
            f"quantity({request}).compareTo(quantity({limit})) <= 0")


def _quantity_message(resource: str) -> str:
    return (f"'resources.requests.{resource} must not exceed resources.limits.{resource}: "
            f"%s > %s'.format([string(self.requests.{resource}), "
            f"string(self.limits.{resource})])")


def _quantity_describe(resource: str) -> Callable[[Resources], str]:
    def describe(r: Resources) -> str:
        return (f"resources.requests.{resource} must not exceed resources.limits.{resource}: "
                f"{getattr(r.requests, resource)} > {getattr(r.limits, resource)}")
    return describe


class ResourceRequests(KubeModel):
    """What the scheduler reserves for each Pod; the HPA's utilisation is relative to it."""

    cpu: Quantity = Field(default="250m", description="CPU reserved per Pod, e.g. 250m.")
    memory: Quantity = Field(default="256Mi", description="Memory reserved per Pod, e.g. 256Mi.")


class ResourceLimits(KubeModel):
    """The most each Pod may use; memory over the limit gets the container killed."""

    cpu: Quantity = Field(default="500m", description="CPU limit per Pod, e.g. 500m.")
    memory: Quantity = Field(default="512Mi", description="Memory limit per Pod, e.g. 512Mi.")


class Resources(KubeModel):
    """Container resources; the defaults are the reference platform's."""

    cel_rules = (
        CelRule(_quantity_rule("cpu"),
                "resources.requests.cpu must not exceed resources.limits.cpu",
                lambda r: _fits(r.requests.cpu, r.limits.cpu), field_path=".requests.cpu",
                message_expression=_quantity_message("cpu"),
                describe=_quantity_describe("cpu")),
        CelRule(_quantity_rule("memory"),
                "resources.requests.memory must not exceed resources.limits.memory",
                lambda r: _fits(r.requests.memory, r.limits.memory),
                field_path=".requests.memory", message_expression=_quantity_message("memory"),
                describe=_quantity_describe("memory")),
    )

    requests: ResourceRequests = nested(ResourceRequests, "Resources reserved for each Pod.")
    limits: ResourceLimits = nested(ResourceLimits, "Resource ceilings for each Pod.")


ProbePath = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^/[-A-Za-z0-9._~/]*$")]


class Probe(KubeModel):
    """An HTTP GET probe against the service's own port."""

    path: ProbePath = Field(description="Path probed on the container port.")
    initial_delay_seconds: int = Field(default=0, ge=0, le=3600,
                                       description="Seconds after start before the first probe.")
    period_seconds: int = Field(default=10, ge=1, le=3600, description="Seconds between probes.")
    timeout_seconds: int = Field(default=1, ge=1, le=120,
                                 description="Seconds before a probe counts as failed.")
    failure_threshold: int = Field(default=3, ge=1, le=100,
                                   description="Consecutive failures before the probe fails.")


class LivenessProbe(Probe):
    """Restarts the container when ``/health`` stops answering (the process is stuck)."""

    path: ProbePath = Field(default="/health", description="Path probed on the container port.")
    initial_delay_seconds: int = Field(default=30, ge=0, le=3600,
                                       description="Seconds after start before the first probe.")
    period_seconds: int = Field(default=10, ge=1, le=3600, description="Seconds between probes.")


class ReadinessProbe(Probe):
    """Takes the Pod out of the Service while ``/ready`` fails (a dependency is down)."""

    path: ProbePath = Field(default="/ready", description="Path probed on the container port.")
    initial_delay_seconds: int = Field(default=5, ge=0, le=3600,
                                       description="Seconds after start before the first probe.")
    period_seconds: int = Field(default=5, ge=1, le=3600, description="Seconds between probes.")


class Probes(KubeModel):
    """Liveness on ``/health`` and readiness on ``/ready``, as every Kommerce service serves."""

    liveness: LivenessProbe = nested(LivenessProbe, "Liveness probe; failing restarts the Pod.")
    readiness: ReadinessProbe = nested(
        ReadinessProbe, "Readiness probe; failing removes the Pod from the Service.")


EnvName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class EnvVar(KubeModel):
    """A literal environment variable for the service's container."""

    name: EnvName = Field(description="Variable name, e.g. LOG_LEVEL.")
    value: str = Field(default="", max_length=4096, description="Literal value.")


class KeyRef(KubeModel):
    """One key of a Secret or ConfigMap in the service's namespace."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap.")
    key: ConfigKey = Field(default="url", description="Key inside its data.")
    optional: bool = Field(default=False,
                           description="Start without it when it is missing, instead of "
                                       "reporting Degraded and leaving Pods pending.")


class ValueSource(KubeModel):
    """Where a connection setting comes from: a Secret key or a ConfigMap key."""

    cel_rules = (
        CelRule("has(self.secretKeyRef) != has(self.configMapKeyRef)",
                "set exactly one of secretKeyRef or configMapKeyRef",
                lambda s: (s.secret_key_ref is None) != (s.config_map_key_ref is None)),
    )

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap.")


def _from_secret(source: ValueSource | None) -> bool:
    return source is None or source.secret_key_ref is not None


class Connections(KubeModel):
    """How the service reaches its backing services; each becomes a well-known variable.

    The variable names are those the services' settings read (see
    :data:`operators.commerceservice.spec.CONNECTION_ENV`).
    """

    cel_rules = (
        CelRule("!has(self.database) || has(self.database.secretKeyRef)",
                "connections.database must come from a Secret (secretKeyRef): a database URL "
                "carries a password", lambda c: _from_secret(c.database),
                field_path=".database"),
        CelRule("!has(self.stripe) || has(self.stripe.secretKeyRef)",
                "connections.stripe must come from a Secret (secretKeyRef): it is an API key",
                lambda c: _from_secret(c.stripe), field_path=".stripe"),
    )

    database: ValueSource | None = Field(
        default=None, description="PostgreSQL URL (DATABASE_URL); must be a Secret key.")
    redis: ValueSource | None = Field(default=None, description="Redis URL (REDIS_URL).")
    kafka: ValueSource | None = Field(
        default=None, description="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS).")
    elasticsearch: ValueSource | None = Field(
        default=None, description="Elasticsearch URL (ELASTICSEARCH_URL).")
    stripe: ValueSource | None = Field(
        default=None, description="Stripe API key (STRIPE_API_KEY); must be a Secret key.")


CONNECTION_ENV: dict[str, str] = {
    "database": "DATABASE_URL",
    "redis": "REDIS_URL",
    "kafka": "KAFKA_BOOTSTRAP_SERVERS",
    "elasticsearch": "ELASTICSEARCH_URL",
    "stripe": "STRIPE_API_KEY",
}
"""Connection field -> the environment variable the service's settings read."""

OPERATOR_ENV = (
    "KOMMERCE_COMPONENT",
    "KOMMERCE_SERVICE_NAME",
    "KOMMERCE_NAMESPACE",
    "KOMMERCE_PORT",
    "KOMMERCE_CIRCUIT_BREAKERS_DIR",
    "KOMMERCE_ROUTE_TABLE",
    "KOMMERCE_COLOR",
    "KOMMERCE_SHARD_MAP_PATH",
    "KOMMERCE_SECRETS_DIR",
    "OTEL_SERVICE_NAME",
)
"""Variables the operator itself sets on the container (see ``render.container_env``)."""

RESERVED_ENV = tuple(sorted({
    *CONNECTION_ENV.values(),
    # The services' settings prefer KOMMERCE_DATABASE_URL over DATABASE_URL, so a literal
    # one would silently replace the Secret reference.
    *(f"KOMMERCE_{variable}" for variable in CONNECTION_ENV.values()),
    *OPERATOR_ENV,
}))
"""Names ``spec.env`` may not set: the operator sets them, from the spec's own fields."""


class NameRef(KubeModel):
    """A whole Secret or ConfigMap in the service's namespace."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap.")
    optional: bool = Field(default=False,
                           description="Start without it when it is missing, instead of "
                                       "reporting Degraded.")


class EnvFromSource(KubeModel):
    """Every key of a Secret or ConfigMap as environment variables."""

    cel_rules = (
        CelRule("has(self.secretRef) != has(self.configMapRef)",
                "set exactly one of secretRef or configMapRef",
                lambda s: (s.secret_ref is None) != (s.config_map_ref is None)),
    )

    secret_ref: NameRef | None = Field(default=None, description="A Secret to import.")
    config_map_ref: NameRef | None = Field(default=None, description="A ConfigMap to import.")
    prefix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                               description="Prepended to every imported variable name.")


class ScalingPolicyType(StrEnum):
    """Whether a scaling policy counts Pods or a percentage of the current replicas."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """Which of several policies wins: the largest change, the smallest, or none at all."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingPolicy(KubeModel):
    """At most ``value`` Pods (or percent) of change per ``periodSeconds``."""

    type: ScalingPolicyType = Field(description="Pods or Percent.")
    value: int = Field(ge=1, le=1000, description="How many Pods, or what percentage.")
    period_seconds: int = Field(ge=1, le=1800, description="The window the limit applies to.")


class ScalingRules(KubeModel):
    """How fast the HPA may move in one direction (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int | None = Field(
        default=None, ge=0, le=3600,
        description="Past recommendations considered before scaling, to avoid flapping.")
    select_policy: SelectPolicy | None = Field(
        default=None, description="Max, Min or Disabled; Disabled turns scaling this way off.")
    policies: list[ScalingPolicy] | None = Field(
        default=None, max_length=10, description="Limits on the rate of change.")


class ScalingBehavior(KubeModel):
    """Scale-up and scale-down behaviour; left out, Kubernetes' defaults apply."""

    scale_up: ScalingRules | None = Field(default=None, description="Rules for adding Pods.")
    scale_down: ScalingRules | None = Field(default=None, description="Rules for removing Pods.")


class Autoscaling(KubeModel):
    """A HorizontalPodAutoscaler on CPU (and optionally memory) utilisation."""

    cel_rules = (
        CelRule("self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
                lambda a: a.min_replicas <= a.max_replicas, field_path=".minReplicas"),
    )

    enabled: bool = Field(default=True,
                          description="Run an HPA. While enabled the HPA owns the replica count "
                                      "and spec.replicas is ignored.")
    min_replicas: int = Field(default=3, ge=1, le=1000, description="Fewest Pods.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most Pods.")
    target_cpu_utilization_percentage: int = Field(
        default=70, ge=1, le=1000, alias="targetCPUUtilizationPercentage",
        description="Average CPU use, as a percentage of the request, the HPA aims for.")
    target_memory_utilization_percentage: int | None = Field(
        default=None, ge=1, le=1000, alias="targetMemoryUtilizationPercentage",
        description="Average memory use, as a percentage of the request, the HPA aims for; "
                    "left out, memory does not drive scaling.")
    behavior: ScalingBehavior | None = Field(
        default=None, description="Scale-up and scale-down rate limits (autoscaling/v2).")


class DisruptionBudget(KubeModel):
    """A PodDisruptionBudget so node drains never take the whole service down at once."""

    enabled: bool = Field(default=True, description="Create the PodDisruptionBudget.")
    max_unavailable: int = Field(
        default=1, ge=1, le=1000,
        description="Pods that voluntary disruptions (drains) may take down at a time.")


PathPrefix = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^/[-A-Za-z0-9._~/]*$")]


def _all_methods() -> list[HttpMethod]:
    return list(HttpMethod)


class Route(KubeModel):
    """A path prefix the gateway sends to this service."""

    path_prefix: PathPrefix = Field(description="Requests whose path starts with this go here, "
                                                "e.g. /api/products.")
    methods: list[HttpMethod] = Field(
        default_factory=_all_methods, min_length=1, max_length=len(HttpMethod),
        description="Methods accepted; others get 405 at the gateway.",
        json_schema_extra={"x-kubernetes-list-type": "set",
                           "default": [method.value for method in HttpMethod]})
    auth_required: bool = Field(
        default=True,
        description="Refuse requests without a valid JWT (401). When false a token is still "
                    "verified if present, and X-User-Id is set from it.")
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="Requests per minute per client the gateway lets through; left out, "
                    "no limit.")


_UNIQUE_PREFIXES = "self.routes.all(r, self.routes.exists_one(o, o.pathPrefix == r.pathPrefix))"
_UNIQUE_ENV = "self.env.all(e, self.env.exists_one(o, o.name == e.name))"
_RESERVED_ENV_LIST = ", ".join(f"'{name}'" for name in RESERVED_ENV)


def _unique(values: list[str]) -> bool:
    return len(values) == len(set(values))


def _repeated(values: list[str]) -> str:
    """The first value that occurs more than once: for messages."""
    return next((v for v in values if values.count(v) > 1), "")


def _repeated_cel(items: str, key: str) -> str:
    """CEL for the same text as :func:`_repeated` over ``items``' ``key`` (only evaluated
    once the uniqueness rule failed, so the list is never empty). Keys are projected
    first and counted with ``exists_one``, which builds no lists: the apiserver's cost
    estimate of a filter over whole objects exceeds its budget."""
    return f"{items}.map(i, i.{key}).filter(k, !{items}.exists_one(o, o.{key} == k))[0]"


class CommerceServiceSpec(KubeModel):
    """The desired state of one commerce component and everything it runs on."""

    cel_rules = (
        CelRule(f"!has(self.routes) || {_UNIQUE_PREFIXES}",
                "routes must have distinct pathPrefix values: merge the methods of duplicate "
                "routes into one", lambda s: _unique([r.path_prefix for r in s.routes]),
                field_path=".routes",
                message_expression="'routes must have distinct pathPrefix values: merge the "
                                   "methods of duplicate routes into one; declared more than "
                                   "once: ' + " + _repeated_cel("self.routes", "pathPrefix"),
                describe=lambda s: "routes must have distinct pathPrefix values: merge the "
                                   "methods of duplicate routes into one; declared more than "
                                   f"once: {_repeated([r.path_prefix for r in s.routes])}"),
        CelRule(f"!has(self.env) || {_UNIQUE_ENV}",
                "env must not name the same variable twice",
                lambda s: _unique([e.name for e in s.env]),
                field_path=".env",
                message_expression="'env must not name the same variable twice; repeated: ' + "
                                   + _repeated_cel("self.env", "name"),
                describe=lambda s: "env must not name the same variable twice; repeated: "
                                   f"{_repeated([e.name for e in s.env])}"),
        CelRule(f"!has(self.env) || self.env.all(e, !(e.name in [{_RESERVED_ENV_LIST}]))",
                f"env must not set {', '.join(RESERVED_ENV)}: the operator sets these itself "
                "(declare backing services under spec.connections)",
                lambda s: not any(e.name in RESERVED_ENV for e in s.env),
                field_path=".env", reason="FieldValueForbidden"),
        # A transition rule: the apiserver compares with the stored object; the operator
        # never sees the old spec, so its mirror always passes.
        CelRule("self.component == oldSelf.component",
                "component cannot be changed (the Deployment's selector is built from it): "
                "create a new CommerceService instead",
                lambda s: True, field_path=".component", reason="FieldValueForbidden"),
        CelRule("self.component == 'product' || !has(self.shardLayout)",
                "only the product component routes by a shard layout: remove shardLayout",
                lambda s: s.component == Component.PRODUCT or s.shard_layout is None,
                field_path=".shardLayout", reason="FieldValueForbidden"),
        CelRule("self.component != 'gateway' || !has(self.routes) || size(self.routes) == 0",
                "a gateway has no routes of its own: declare routes on the services behind it",
                lambda s: s.component != Component.GATEWAY or not s.routes,
                field_path=".routes", reason="FieldValueForbidden"),
    )

    component: Component = Field(description="Which commerce component this is.")
    image: str = Field(min_length=1, max_length=512, pattern=r"^[^\s]+$",
                       description="Container image, e.g. registry.example/kommerce:1.0.0.")
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=32,
        description="Arguments for the image's entrypoint; left out, the image's default "
                    "command runs (it reads KOMMERCE_COMPONENT to know what to serve).")
    image_pull_policy: PullPolicy = Field(default=PullPolicy.IF_NOT_PRESENT,
                                          description="Always, IfNotPresent or Never.")
    replicas: int = Field(default=3, ge=0, le=1000,
                          description="Pods to run when autoscaling is disabled.")
    port: int = Field(default=8000, ge=1, le=65535,
                      description="Port the container serves HTTP (and /metrics) on.")
    service_port: int = Field(default=80, ge=1, le=65535,
                              description="Port the Service exposes inside the cluster.")
    resources: Resources = nested(Resources, "CPU and memory requests and limits per Pod.")
    probes: Probes = nested(Probes, "Liveness (/health) and readiness (/ready) probes.")
    env: list[EnvVar] = Field(default_factory=list, max_length=64,
                              description="Literal environment variables.")
    env_from: list[EnvFromSource] = Field(
        default_factory=list, max_length=16,
        description="Secrets and ConfigMaps imported whole as environment variables.")
    connections: Connections = nested(
        Connections, "Database, Redis, Kafka, Elasticsearch and Stripe settings, each from a "
                     "Secret or ConfigMap key.")
    autoscaling: Autoscaling = nested(Autoscaling, "Horizontal Pod autoscaling.")
    disruption_budget: DisruptionBudget = nested(
        DisruptionBudget, "PodDisruptionBudget for voluntary disruptions.")
    routes: list[Route] = Field(default_factory=list, max_length=16,
                                description="Path prefixes the gateway routes to this service.")
    shard_layout: ObjectName | None = Field(
        default=None,
        description="ShardLayout (same namespace) whose shard map the product service routes "
                    "by: its map ConfigMap and its shards' database Secrets are mounted into "
                    "the Pods, and a new map version is taken into force without a restart.")

    def referenced_secrets(self) -> dict[str, bool]:
        """Secret name -> whether every reference to it is optional.

        The handler checks these exist and reports ``Degraded`` (not a crash loop) when a
        required one does not.
        """
        return self._references("secret")

    def referenced_config_maps(self) -> dict[str, bool]:
        """ConfigMap name -> whether every reference to it is optional. The shard map is
        required: a product service without it would route every category to one
        database."""
        found = self._references("config_map")
        if self.shard_layout is not None:
            found[shard_map_name(self.shard_layout)] = False
        return dict(sorted(found.items()))

    def _references(self, kind: str) -> dict[str, bool]:
        found: dict[str, bool] = {}
        refs: list[KeyRef | NameRef | None] = []
        for field in CONNECTION_ENV:
            source: ValueSource | None = getattr(self.connections, field)
            if source is not None:
                refs.append(getattr(source, f"{kind}_key_ref"))
        refs.extend(getattr(source, f"{kind}_ref") for source in self.env_from)
        for ref in refs:
            if ref is not None:
                found[ref.name] = found.get(ref.name, True) and ref.optional
        return dict(sorted(found.items()))


class CommerceServiceStatus(ResourceStatus):
    """What the operator last saw of the service's Deployment."""

    replicas: int | None = Field(default=None, ge=0,
                                 description="Pods the Deployment currently has.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods that are Ready.")
    updated_replicas: int | None = Field(default=None, ge=0,
                                         description="Pods running the current template.")
    image: str | None = Field(default=None, max_length=512,
                              description="Image of the Deployment's current template.")


RESOURCE = CustomResource(
    kind="CommerceService",
    plural="commerceservices",
    singular="commerceservice",
    short_names=("csvc",),
    spec_model=CommerceServiceSpec,
    status_model=CommerceServiceStatus,
    description=(
        "A commerce component (user, product, search, order, payment, review, shipping or "
        "gateway). The operator runs it as a Deployment with a Service, HorizontalPodAutoscaler, "
        "PodDisruptionBudget and Istio routes, and publishes its routes to the gateway."),
    printer_columns=(
        PrinterColumn("Component", ".spec.component", "string", "Commerce component."),
        PrinterColumn("Image", ".spec.image", "string", "Container image."),
        PrinterColumn("Ready-Pods", ".status.readyReplicas", "integer", "Pods that are Ready."),
        *status_columns(),
    ),
)
