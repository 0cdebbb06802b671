"""Client circuit-breaker settings: how a caller's breaker for one service trips.

Why a contract: the CircuitBreakerPolicy operator writes one file per target service
(:class:`ClientBreakerSettings`, key ``<target>.json``) into the ConfigMap
``kommerce-circuit-breakers``; every service mounts the folder and its HTTP client
hot-reloads it into :class:`BreakerPolicy` (``services.core.http``). Both sides import this
module, so a field the operator writes is one the client reads, under the same name::

    {"policy": "payment-breaker", "target": "payment-service",
     "host": "payment-service.shop.svc.cluster.local", "timeoutSeconds": 3.0,
     "errorThresholdPercentage": 50, "resetTimeoutSeconds": 30.0,
     "rollingWindowSeconds": 10.0, "rollingBuckets": 10, "volumeThreshold": 5}

A hand-written file (local runs) may instead hold ``{"default": {...}, "targets":
{"<target>": {...}}}`` (:class:`BreakerConfig`), where a target's entry overrides only the
fields it names.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

#: The ConfigMap the operator writes and every service's Pods mount.
BREAKERS_CONFIGMAP = "kommerce-circuit-breakers"


def breaker_file_name(target: str) -> str:
    """The ConfigMap key (file) holding ``target``'s settings."""
    return f"{target}.json"


class BreakerPolicy(BaseModel):
    """The settings one breaker runs with (camelCase or snake_case keys, and the operator's
    ``rollingBuckets``); defaults are the reference's (opossum). Keys it does not know
    (``policy``, ``host``) are ignored."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True,
                              extra="ignore")

    timeout_seconds: float = Field(3.0, gt=0, description="Per-call time limit.")
    error_threshold_percentage: float = Field(50.0, gt=0, le=100)
    reset_timeout_seconds: float = Field(30.0, gt=0, description="Open → half-open delay.")
    rolling_window_seconds: float = Field(10.0, gt=0)
    rolling_window_buckets: int = Field(
        10, ge=1, le=1000,
        validation_alias=AliasChoices("rolling_window_buckets", "rollingWindowBuckets",
                                      "rollingBuckets"))
    volume_threshold: int = Field(
        5, ge=0, description="Calls the window must hold before it may open (so one failed "
        "call out of one does not trip it).")
    half_open_max_calls: int = Field(1, ge=1, description="Concurrent trial calls when half-open.")

    def updated(self, override: dict[str, object]) -> BreakerPolicy:
        """This policy with the fields ``override`` names (in any accepted spelling)."""
        fields = self.model_dump()
        for key, value in override.items():
            fields[_SPELLINGS.get(key, key)] = value
        return BreakerPolicy.model_validate(fields)

    @model_validator(mode="after")
    def _buckets_divide_window(self) -> BreakerPolicy:
        if self.rolling_window_seconds / self.rolling_window_buckets < 0.001:
            raise ValueError("rolling window buckets must be at least 1 ms wide")
        return self


def _spellings() -> dict[str, str]:
    """Every accepted key (snake_case, camelCase, extra aliases) → the field name."""
    spellings: dict[str, str] = {}
    for name, info in BreakerPolicy.model_fields.items():
        spellings[name] = spellings[to_camel(name)] = name
        if isinstance(info.validation_alias, AliasChoices):
            for choice in info.validation_alias.choices:
                if isinstance(choice, str):
                    spellings[choice] = name
    return spellings


_SPELLINGS = _spellings()


class ClientBreakerSettings(BaseModel):
    """One target's file as the operator writes it: the policy's client settings in plain
    numbers (seconds, percent), with the policy and the target's host for the reader's log.

    Only types are checked here: the CircuitBreakerPolicy's schema bounds the values, and
    the reader's :class:`BreakerPolicy` refuses a file whose values it cannot run with."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True,
                              extra="forbid")

    policy: str
    target: str
    host: str
    timeout_seconds: float
    error_threshold_percentage: int
    reset_timeout_seconds: float
    rolling_window_seconds: float
    rolling_buckets: int
    volume_threshold: int

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)

    def to_json(self) -> str:
        """The ConfigMap's file content."""
        return json.dumps(self.wire(), sort_keys=True, indent=2) + "\n"

    def breaker_policy(self) -> BreakerPolicy:
        """What the target's callers run with (ValueError if they could not)."""
        return BreakerPolicy().updated(self.wire())


class BreakerConfig(BaseModel):
    """Every target's settings in one process: a default and per-target overrides."""

    default: BreakerPolicy = Field(default_factory=BreakerPolicy)
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def policy_for(self, target: str) -> BreakerPolicy:
        override = self.targets.get(target)
        return self.default.updated(override) if override else self.default

    def validate_targets(self) -> BreakerConfig:
        for target in self.targets:
            self.policy_for(target)  # raises on a bad override
        return self


def parse_breaker_config(data: dict[str, Any]) -> BreakerConfig:
    """One file: the operator's single-target settings (a ``"target"`` key), or a
    ``default``/``targets`` document; ValueError naming the bad field otherwise."""
    if "target" in data:
        data = dict(data)
        target = str(data.pop("target"))
        return BreakerConfig(targets={target: data}).validate_targets()
    return BreakerConfig.model_validate(data).validate_targets()
