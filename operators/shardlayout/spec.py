"""ShardLayout: which database holds which product categories (the reference's sharding by
category), rendered into a versioned shard map that the product service hot-reloads (the map's
format, the placement of unlisted categories and its hash are the contract in
:mod:`kommerce.contracts.shard_map`).

Lists are bounded (16 shards, 32 categories each) so the CEL rule that keeps a category in
one shard stays inside the apiserver's cost budget; top-level categories are few.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kommerce.contracts.shard_map import (
    UnlistedPlacement,
    rendezvous_shard,
)
from operators.conditions import ResourceStatus
from operators.resources import CustomResource, PrinterColumn, status_columns
from operators.schema import CelRule, ConfigKey, DnsLabel, KubeModel, ObjectName

MAX_SHARDS = 16
MAX_CATEGORIES_PER_SHARD = 32


def shard_map_name(layout: str) -> str:
    """The ConfigMap a layout renders to, and the product Pods mount."""
    return f"{layout}-shard-map"


Category = Annotated[str, Field(min_length=1, max_length=63,
                                pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")]


class SecretKeySelector(KubeModel):
    """A key of a Secret in the layout's namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: ConfigKey = Field(default="url", description="Key holding the database URL.")


class Shard(KubeModel):
    """One database and the categories it owns."""

    name: DnsLabel = Field(description="Shard name, e.g. shard-1; referenced by defaultShard.")
    database: SecretKeySelector = Field(description="Secret key with the shard's PostgreSQL URL.")
    categories: list[Category] = Field(
        default_factory=list, max_length=MAX_CATEGORIES_PER_SHARD,
        description="Categories whose products live on this shard.",
        json_schema_extra={"x-kubernetes-list-type": "set"})


_UNIQUE_NAMES = "self.shards.all(s, self.shards.exists_one(o, o.name == s.name))"
_ONE_SHARD_PER_CATEGORY = (
    "self.shards.all(a, self.shards.all(b, a.name == b.name || "
    "a.categories.all(c, !(c in b.categories))))"
)


_SHARED = "self.shards.exists(b, b.name != a.name && c in b.categories)"


def _repeated_names(spec: ShardLayoutSpec) -> str:
    names = [shard.name for shard in spec.shards]
    return next((name for name in names if names.count(name) > 1), "")


def _shared_category(spec: ShardLayoutSpec) -> str:
    """The first category (in shard order) another shard also lists, as the CEL message
    expression picks it."""
    for shard in spec.shards:
        for category in shard.categories:
            if any(o.name != shard.name and category in o.categories for o in spec.shards):
                return category
    return ""


def _one_shard_per_category(spec: ShardLayoutSpec) -> bool:
    seen: set[str] = set()
    for shard in spec.shards:
        if seen & set(shard.categories):
            return False
        seen |= set(shard.categories)
    return True


class ShardLayoutSpec(KubeModel):
    """The shards of the product catalog and the categories each one owns."""

    cel_rules = (
        CelRule(_UNIQUE_NAMES, "shard names must be unique",
                lambda s: len({shard.name for shard in s.shards}) == len(s.shards),
                field_path=".shards",
                message_expression="'shard names must be unique; repeated: ' + "
                                   "self.shards.map(s, s.name).filter(n, "
                                   "!self.shards.exists_one(o, o.name == n))[0]",
                describe=lambda s: "shard names must be unique; repeated: "
                                   + _repeated_names(s)),
        CelRule(_ONE_SHARD_PER_CATEGORY,
                "a category may belong to only one shard: remove it from all shards but one",
                _one_shard_per_category, field_path=".shards",
                message_expression="'a category may belong to only one shard: remove it from "
                                   "all shards but one; ' + "
                                   # map to one string per shard, then filter the
                                   # strings: the apiserver's cost estimate of a filter
                                   # over shard objects exceeds its budget.
                                   f"self.shards.map(a, a.categories.exists(c, {_SHARED}) ? "
                                   f"a.categories.filter(c, {_SHARED})[0] : '')"
                                   ".filter(shared, shared != '')[0] + "
                                   "' is in more than one shard'",
                describe=lambda s: "a category may belong to only one shard: remove it from "
                                   f"all shards but one; {_shared_category(s)} is in more "
                                   "than one shard"),
        CelRule("self.shards.exists(s, s.name == self.defaultShard)",
                "defaultShard must name one of spec.shards",
                lambda s: any(shard.name == s.default_shard for shard in s.shards),
                field_path=".defaultShard", reason="FieldValueInvalid"),
    )

    shards: list[Shard] = Field(min_length=1, max_length=MAX_SHARDS,
                                description="The shards, each with its database and categories.")
    default_shard: DnsLabel = Field(
        description="Shard for catalog-wide data, and for unlisted categories unless "
                    "unlistedCategories is Hash.")
    unlisted_categories: UnlistedPlacement = Field(
        default=UnlistedPlacement.DEFAULT_SHARD,
        description="DefaultShard keeps products of unlisted categories on defaultShard; Hash "
                    "spreads them over all shards by a stable hash of the category.")

    def database_secrets(self) -> dict[str, tuple[str, ...]]:
        """Secret name -> the keys of it the shards read, both sorted: what a product Pod
        must have mounted to open every shard."""
        keys: dict[str, set[str]] = {}
        for shard in self.shards:
            keys.setdefault(shard.database.name, set()).add(shard.database.key)
        return {name: tuple(sorted(keys[name])) for name in sorted(keys)}

    def shard_for(self, category: str) -> str:
        """The shard that owns ``category``: the shard listing it, else by placement."""
        for shard in self.shards:
            if category in shard.categories:
                return shard.name
        if self.unlisted_categories is UnlistedPlacement.HASH:
            return rendezvous_shard(category, [shard.name for shard in self.shards])
        return self.default_shard


class ReshardPhase(StrEnum):
    """Progress of an online move of categories between shards."""

    STABLE = "Stable"  # the map in force matches the spec
    COPYING = "Copying"  # bulk copy of the moving categories' rows to the new shard
    CATCHING_UP = "CatchingUp"  # replaying writes made during the copy
    CUTTING_OVER = "CuttingOver"  # writes paused for the moving categories; new map published
    CLEANING_UP = "CleaningUp"  # deleting the moved rows from the old shard
    FAILED = "Failed"  # stopped; the previous map is still in force
    BLOCKED = "Blocked"  # the spec cannot be published (see Degraded); the map in force stays


class CategoryMove(KubeModel):
    """One category moving between shards."""

    category: str = Field(max_length=63, description="The category being moved.")
    from_shard: str = Field(max_length=63, description="Shard it is leaving.")
    to_shard: str = Field(max_length=63, description="Shard it is moving to.")
    phase: ReshardPhase = Field(description="How far the move has come.")
    rows_copied: int | None = Field(default=None, ge=0, description="Rows copied so far.")
    started_at: datetime | None = Field(default=None, description="When the move started.")


class ShardLayoutStatus(ResourceStatus):
    """The shard map in force and any resharding under way."""

    map_version: str | None = Field(default=None, max_length=64,
                                    description="Version of the shard map in force (a content "
                                                "hash); the product service reports the one it "
                                                "has loaded.")
    config_map: str | None = Field(default=None, max_length=253,
                                   description="ConfigMap holding the shard map.")
    phase: ReshardPhase | None = Field(default=None, description="Resharding progress.")
    moves: list[CategoryMove] | None = Field(
        default=None, max_length=MAX_SHARDS * MAX_CATEGORIES_PER_SHARD,
        description="Categories being moved between shards.")


RESOURCE = CustomResource(
    kind="ShardLayout",
    plural="shardlayouts",
    singular="shardlayout",
    short_names=("shl",),
    spec_model=ShardLayoutSpec,
    status_model=ShardLayoutStatus,
    description=(
        "The product catalog's shards: each shard's database and the categories it owns, "
        "and a default shard. Rendered into a versioned shard map that the product service "
        "hot-reloads; moving a category between shards is an online resharding."),
    printer_columns=(
        PrinterColumn("Default", ".spec.defaultShard", "string", "Default shard."),
        PrinterColumn("Version", ".status.mapVersion", "string", "Shard map in force."),
        PrinterColumn("Phase", ".status.phase", "string", "Resharding progress."),
        *status_columns(),
    ),
)
