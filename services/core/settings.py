"""Settings from the environment, one object per service.

Every value has a default that runs the platform locally on the embedded servers, and a
description that says what it is for; production overrides them with environment variables
(``KOMMERCE_DATABASE_URL`` …). A service that needs more values subclasses
:class:`ServiceSettings`, keeping the ``KOMMERCE_`` prefix so one Secret can feed them all,
or sets its own prefix in ``model_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _env(field: str, *extra: str) -> AliasChoices:
    """The field's own ``KOMMERCE_`` variable first, then the names the operator sets, and
    the field name for keyword construction. (An alias replaces the prefix, so it is
    spelled out here.)"""
    return AliasChoices(f"KOMMERCE_{field.upper()}", *extra, field)



def comma_or_json_list(value: object) -> object:
    """A list setting given in the environment as ``a,b`` or as a JSON array; anything else
    is left for pydantic to judge."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import orjson  # only for this input form

            return orjson.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value

class ServiceSettings(BaseSettings):
    """Everything the core needs to run one service."""

    model_config = SettingsConfigDict(
        env_prefix="KOMMERCE_",
        env_file=None,
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    # -- identity ---------------------------------------------------------------------------
    service_name: str = Field(
        "kommerce",
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service (user, product, order …): log field, metric and "
        "trace resource, event source, default database schema.",
    )
    environment: Literal["local", "test", "production"] = Field(
        "local",
        description="Where this runs; 'production' refuses development-only defaults such as "
        "the built-in JWT secret.",
    )
    version: str = Field("0.1.0", description="Version reported in the OpenAPI document.")
    color: str = Field(
        "", pattern=r"^[a-z]{0,16}$",
        description="Blue-green colour of this Pod (the operator passes its Pod label), sent "
        "back as X-Kommerce-Color so a release manager sees which colour answered; empty: "
        "no header.",
    )
    host: str = Field("0.0.0.0", description="Address the HTTP server binds (all interfaces, "
                      "as a container needs).")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    trusted_proxies: str = Field(
        "127.0.0.1,127.0.0.6", pattern=r"^[0-9A-Fa-f.:/,* ]+$",
        description="Comma-separated addresses or networks whose X-Forwarded-For and "
                    "X-Forwarded-Proto are believed: by default the local gateway and the "
                    "Istio sidecar (which connects from 127.0.0.6), add a load balancer's. "
                    "Anyone else's are ignored, so a client cannot pick the address that "
                    "per-IP rate limits count it under; '*' trusts every peer.")

    # -- database ---------------------------------------------------------------------------
    database_url: str = Field(
        "postgresql+asyncpg://kommerce@127.0.0.1:5432/kommerce",
        validation_alias=_env("database_url", "DATABASE_URL"),
        description="SQLAlchemy URL of this service's PostgreSQL database (asyncpg driver); "
        "also read from DATABASE_URL, which the CommerceService operator sets.",
    )
    database_schema: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema holding this service's tables (schema-per-service in one "
        "database). Default: the service name with '-' replaced by '_'.",
    )
    # Sized for the steady concurrency, not the average: the pool opens connections only as
    # they are needed and keeps up to ``database_pool_size``, but an overflow connection is
    # closed the moment it is returned, so a process that steadily needs more than the pool
    # opens and closes a PostgreSQL backend per burst: with 10 + 20 the checkout bench
    # opened connections all the time and carried fewer orders than with pools that kept
    # what they opened (the README's design measurements).
    database_pool_size: int = Field(
        30, ge=1, description="Connections kept open per process once opened (they are "
        "opened as concurrency needs them).")
    database_max_overflow: int = Field(
        10, ge=0, description="Extra connections for bursts beyond the pool, each closed "
        "again when returned."
    )
    database_pool_timeout_seconds: float = Field(
        10.0, gt=0, description="How long a request waits for a pooled connection."
    )
    database_statement_timeout_ms: int = Field(
        15_000, ge=0, description="PostgreSQL statement_timeout for every session (0 = none)."
    )
    migrate_on_startup: bool = Field(
        True,
        description="Run this service's Alembic migrations when the app starts (under an "
        "advisory lock, so replicas starting together migrate once).",
    )

    # -- redis & cache -----------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=_env("redis_url", "REDIS_URL"),
        description="Redis URL for the cache, rate limits, carts and (by default) the bus; "
        "also read from REDIS_URL.",
    )
    cache_prefix: str | None = Field(
        None, description="Prefix of every cache key. Default: '<service_name>:'."
    )
    cache_ttl_seconds: int = Field(3600, ge=1, description="Default cache-aside TTL.")
    cache_near_enabled: bool = Field(
        True, description="Keep in-process copies of hot entries for the caches that opt in "
        "(e.g. product reads), invalidated across processes over Redis pub/sub.",
    )
    cache_near_ttl_seconds: float = Field(
        30.0, gt=0, description="Longest an in-process copy is served: the staleness bound "
        "should an invalidation message be lost without the subscription noticing.",
    )
    cache_near_max_entries: int = Field(
        10_000, ge=1, description="In-process copies kept per process (oldest dropped first).",
    )

    # -- events ------------------------------------------------------------------------------
    event_bus: Literal["redis", "kafka"] = Field(
        "redis",
        description="Event bus backend: 'redis' (Redis Streams, the embedded default) or "
        "'kafka' (production).",
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=_env("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated Kafka bootstrap servers; also read from "
        "KAFKA_BOOTSTRAP_SERVERS.",
    )
    kafka_topic_partitions: int = Field(
        3, ge=1, description="Partitions of topics the service creates (ordering is per key).")
    kafka_replication_factor: int = Field(
        1, ge=1, description="Replicas of topics the service creates (3 in production).")
    event_topic_prefix: str = Field(
        "kommerce.",
        description="Prefix of every stream/topic name, so several platforms (or test runs) "
        "can share one broker.",
    )
    event_max_attempts: int = Field(
        5,
        ge=1,
        description="Attempts a consumer makes at one event before it goes to the "
        "dead-letter stream/topic. Infrastructure outages do not count as attempts.",
    )
    outbox_poll_interval_seconds: float = Field(
        0.5,
        gt=0,
        description="How often the outbox relay looks for rows when nothing woke it "
        "(a commit in this process wakes it at once).",
    )
    outbox_linger_seconds: float = Field(
        0.1,
        ge=0,
        description="How long a commit's events wait for the commits behind them before "
        "the relay publishes them together (Kafka's linger.ms, for the outbox): under load "
        "a pass per commit cost more CPU than the commits. Saga commands do not wait for "
        "it (they also run inline); event consumers see events up to this much later.",
    )
    outbox_batch_size: int = Field(200, ge=1, description="Outbox rows published per batch.")
    outbox_enabled: bool = Field(
        True, description="Run the outbox relay in this process."
    )

    # -- auth --------------------------------------------------------------------------------
    jwt_private_key: SecretStr | None = Field(
        None,
        description="PEM private key (Ed25519 or EC P-256) this service signs tokens with: "
        "the user service's signs user tokens; any other service's signs only its own "
        "service-identity tokens (subject 'service:<name>', role 'service'). None: this "
        "service issues no tokens (outside production: the built-in development key).",
    )
    jwt_key_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9:._-]{1,64}$",
        description="'kid' of jwt_private_key in the JWKS. 'service:<name>…' marks a "
        "service key, anything else a user-token key. Default: 'user' for the user "
        "service, 'service:<name>' for the others.",
    )
    jwt_jwks: str | None = Field(
        None,
        description="The trusted public keys: a JWKS document (JSON), or the path of a file "
        "holding one (as the user service publishes at /.well-known/jwks.json). Required in "
        "production; None elsewhere trusts only the built-in development key.",
    )
    jwt_audience: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="The audience this service accepts service tokens for. Default: the "
        "component name (service_name without a '-service' suffix: 'product').",
    )
    jwt_api_audience: str = Field(
        "kommerce", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Audience of user access tokens: the public API behind the gateway, "
        "accepted by the gateway and by every service that verifies bearer tokens.",
    )
    jwt_issuer: str = Field("kommerce", description="'iss' claim written and required.")
    jwt_secret: SecretStr | None = Field(
        None, description="No longer used: tokens were signed with one shared HMAC key, so "
        "any service could mint any token. Refused when set, so a stale configuration "
        "fails loudly instead of being ignored.")
    access_token_ttl_seconds: int = Field(
        15 * 60, ge=1, description="Access token lifetime (15 minutes)."
    )
    refresh_token_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="Refresh token lifetime (7 days)."
    )
    jwt_leeway_seconds: int = Field(
        5, ge=0, description="Clock skew tolerated when checking exp/iat."
    )
    token_revocation_prefix: str = Field(
        "kommerce:revoked:",
        description="Redis key prefix of the revocation list (ended sessions and logged-out "
        "token ids, each kept until the last access token it covers expires). Shared by "
        "the user service, which writes it, and every verifier.",
    )
    token_revocation_timeout_seconds: float = Field(
        0.25, gt=0,
        description="How long a revocation check may wait for Redis. A slower or failing "
        "check lets the token through (logged): a Redis outage must not take the shop "
        "down, and a token is then only as revocable as its 15-minute lifetime.",
    )
    password_hash_workers: int | None = Field(
        None, ge=1,
        description="Threads hashing passwords (Argon2id, 64 MiB each while it runs). "
        "Default: the machine's CPU count; more only queue for the same cores.",
    )
    password_hash_queue_limit: int = Field(
        64, ge=0,
        description="Password hashes allowed to wait for a thread; beyond it a login or "
        "registration is answered 503 with Retry-After instead of piling up.",
    )
    password_hash_max_wait_seconds: float = Field(
        8.0, gt=0,
        description="Longest a hash waits for a thread before the request is answered 503 "
        "with Retry-After. The gateway's timeout for /api/auth is derived from it.",
    )
    trust_gateway_headers: bool = Field(
        False,
        description="Accept the gateway's X-User-Id/X-User-Roles headers as the caller's "
        "identity. Only for services reachable solely through the gateway.",
    )

    # -- http --------------------------------------------------------------------------------
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed by CORS (comma-separated or a JSON list); empty = CORS off.",
    )
    breaker_config_path: Path | None = Field(
        None,
        validation_alias=_env("breaker_config_path", "KOMMERCE_CIRCUIT_BREAKERS_DIR"),
        description="JSON file (or folder of them) rendered from CircuitBreakerPolicy "
        "ConfigMaps; hot-reloaded; also read from KOMMERCE_CIRCUIT_BREAKERS_DIR. None or "
        "absent = the reference defaults (3 s, 50 %, 30 s, 10 s in 10 buckets).",
    )
    config_reload_interval_seconds: float = Field(
        2.0, gt=0, description="How often mounted config files are checked for changes."
    )
    shard_map_path: Path | None = Field(
        None, description="Shard map file (or mounted ConfigMap folder) rendered from the "
        "ShardLayout; hot-reloaded."
    )
    secrets_dir: Path = Field(
        Path("/etc/kommerce/secrets"),
        description="Where Secrets named by the shard map are mounted (<dir>/<secret>/<key>).",
    )

    # -- observability -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Root log level."
    )
    log_json: bool = Field(True, description="JSON log lines (False: plain text for humans).")
    gc_freeze_after_startup: bool = Field(
        True, description="Move everything alive after start-up out of the garbage "
        "collector's sight (gc.freeze): full collections then scan only what requests "
        "create, instead of pausing the event loop for 100+ ms over the imported code.",
    )
    otel_enabled: bool = Field(
        False, description="Create an OpenTelemetry tracer provider (otherwise no-op tracing)."
    )
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="Where spans go when tracing is on: nowhere (in-process only), stdout, "
        "or OTLP (needs the opentelemetry-exporter-otlp package).",
    )
    otel_endpoint: str | None = Field(None, description="OTLP endpoint when otel_exporter=otlp.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return comma_or_json_list(value)

    @model_validator(mode="after")
    def _refuse_development_keys_in_production(self) -> ServiceSettings:
        if self.jwt_secret is not None:
            raise ValueError("KOMMERCE_JWT_SECRET is no longer used: tokens are signed with "
                             "KOMMERCE_JWT_PRIVATE_KEY and verified with KOMMERCE_JWT_JWKS")
        if self.environment == "production" and not self.jwt_jwks:
            raise ValueError("KOMMERCE_JWT_JWKS must be set in production (the trusted "
                             "public keys; the development key is refused there)")
        return self

    @property
    def token_audience(self) -> str:
        """The audience this service accepts service tokens for."""
        return self.jwt_audience or self.component

    @property
    def component(self) -> str:
        """The component name: ``product`` for ``product`` and ``product-service``."""
        return self.service_name.removesuffix("-service")

    @property
    def schema_name(self) -> str:
        """The database schema actually used."""
        return self.database_schema or self.service_name.replace("-", "_")

    @property
    def cache_key_prefix(self) -> str:
        return self.cache_prefix if self.cache_prefix is not None else f"{self.service_name}:"
