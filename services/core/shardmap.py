"""The product catalog's shard map: which database holds which category.

The ShardLayout operator renders a versioned map into a ConfigMap (key ``shard-map.json``);
the product service mounts it and routes every query with :meth:`ShardMap.shard_for`. A new
map is picked up without a restart; one that fails validation — or changes content without
changing ``version`` — is refused and the map in force stays (see
:mod:`services.core.reload`).

Format (JSON, or YAML by file suffix), as ``operators/shardlayout/render.py`` writes it::

    {"format": 1, "layout": "catalog", "version": "3f2a9c0d1e7b4a55",
     "defaultShard": "shard-1",
     "unlistedCategories": "DefaultShard",          # or "Hash"
     "hashAlgorithm": "rendezvous-sha256",
     "shards": [
       {"name": "shard-1", "databaseSecret": {"name": "catalog-1", "key": "url"},
        "categories": ["computers", "electronics"]},
       {"name": "shard-2", "dsn": "postgresql+asyncpg://…/catalog_2"}],   # local runs
     "categories": {"computers": "shard-1", "electronics": "shard-1"}}

``shards`` may also be written as an object keyed by name (handy by hand). A shard's
database comes from exactly one of ``dsn`` (literal), ``dsnEnv`` (an environment variable),
``dsnFile`` (a file) or ``databaseSecret`` (the Secret key mounted at
``<secrets_dir>/<secret>/<key>``). A category belongs to one shard; the default shard must
exist; unlisted categories go to the default shard, or with ``Hash`` to the shard that wins
rendezvous hashing — the same function the operator uses, so both agree on placement.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from services.core.metrics import counter
from services.core.reload import WatchedFile

SHARD_MAP_RELOADS = counter("shard_map_loads_total", "Shard maps taken into force", ["version"])

SUPPORTED_FORMAT = 1
HASH_ALGORITHM = "rendezvous-sha256"
DEFAULT_SECRETS_DIR = Path("/etc/kommerce/secrets")
_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def rendezvous_shard(category: str, shard_names: list[str]) -> str:
    """Highest-random-weight hashing: adding or removing a shard moves only the categories
    that hash to it. Must equal the operator's ``rendezvous_shard``; a test pins that."""

    def weight(shard: str) -> bytes:
        return hashlib.sha256(f"{shard}/{category}".encode()).digest()

    return max(sorted(shard_names), key=weight)


class UnlistedPlacement(StrEnum):
    DEFAULT_SHARD = "DefaultShard"
    HASH = "Hash"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True,
                              extra="forbid")


class SecretKeyRef(_Model):
    name: str = Field(min_length=1)
    key: str = Field("url", min_length=1)


class Shard(_Model):
    """One shard: its database and the categories it owns."""

    name: str = Field(pattern=_NAME)
    dsn: str | None = None
    dsn_env: str | None = None
    dsn_file: Path | None = None
    database_secret: SecretKeyRef | None = None
    categories: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> Shard:
        sources = [s for s in (self.dsn, self.dsn_env, self.dsn_file, self.database_secret)
                   if s]
        if len(sources) != 1:
            raise ValueError(f"shard {self.name!r} needs exactly one of dsn, dsnEnv, dsnFile, "
                             "databaseSecret")
        return self

    def resolve_dsn(self, secrets_dir: Path = DEFAULT_SECRETS_DIR) -> str:
        """The shard's database URL, read now (so a rotated Secret is picked up)."""
        if self.dsn:
            return self.dsn
        if self.dsn_env:
            value = os.environ.get(self.dsn_env)
            if not value:
                raise LookupError(f"shard {self.name}: environment variable {self.dsn_env} "
                                  "is not set")
            return value
        path = self.dsn_file
        if path is None:
            assert self.database_secret is not None
            path = secrets_dir / self.database_secret.name / self.database_secret.key
        try:
            return path.read_text().strip()
        except FileNotFoundError as exc:
            raise LookupError(f"shard {self.name}: {path} is not mounted") from exc


class ShardMap(_Model):
    version: str = Field(min_length=1, max_length=64)
    format: int = Field(SUPPORTED_FORMAT, ge=1, le=SUPPORTED_FORMAT)
    layout: str | None = None
    default_shard: str
    unlisted_categories: UnlistedPlacement = UnlistedPlacement.DEFAULT_SHARD
    hash_algorithm: str = HASH_ALGORITHM
    shards: tuple[Shard, ...] = Field(min_length=1)
    categories: dict[str, str] = Field(default_factory=dict)
    _owners: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("shards", mode="before")
    @classmethod
    def _shards_by_name(cls, value: object) -> object:
        if isinstance(value, dict):
            return [{"name": name, **(body or {})} for name, body in value.items()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ShardMap:
        names = [shard.name for shard in self.shards]
        if len(set(names)) != len(names):
            raise ValueError("shard names must be unique")
        if self.default_shard not in names:
            raise ValueError(f"default shard {self.default_shard!r} is not among the shards")
        if self.hash_algorithm != HASH_ALGORITHM:
            raise ValueError(f"unknown hash algorithm {self.hash_algorithm!r}")
        owners: dict[str, str] = {}
        for shard in self.shards:
            for category in shard.categories:
                if owners.setdefault(category, shard.name) != shard.name:
                    raise ValueError(f"category {category!r} is placed on both "
                                     f"{owners[category]!r} and {shard.name!r}")
        for category, shard_name in self.categories.items():
            if owners.setdefault(category, shard_name) != shard_name:
                raise ValueError(f"category {category!r} is placed on both "
                                 f"{owners[category]!r} and {shard_name!r}")
            if shard_name not in names:
                raise ValueError(f"category {category!r} is placed on unknown shard "
                                 f"{shard_name!r}")
        self._owners = owners
        return self

    @property
    def shard_names(self) -> list[str]:
        return [shard.name for shard in self.shards]

    @property
    def placements(self) -> dict[str, str]:
        """Every explicitly placed category → its shard."""
        return dict(self._owners)

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise KeyError(name)

    def shard_for(self, category: str) -> str:
        """The shard holding ``category``'s products."""
        owner = self._owners.get(category)
        if owner is not None:
            return owner
        if self.unlisted_categories is UnlistedPlacement.HASH:
            return rendezvous_shard(category, self.shard_names)
        return self.default_shard

    def dsn_for(self, shard: str, secrets_dir: Path = DEFAULT_SECRETS_DIR) -> str:
        return self.shard(shard).resolve_dsn(secrets_dir)

    def same_content(self, other: ShardMap) -> bool:
        return self.model_dump(exclude={"version"}) == other.model_dump(exclude={"version"})


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise ValueError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                  _construct_mapping)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_shard_map(text: str, *, yaml_format: bool = False) -> ShardMap:
    if yaml_format:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    else:
        data = json.loads(text, object_pairs_hook=_no_duplicates)  # orjson has no such hook
    return ShardMap.model_validate(data)


def load_shard_map(path: Path) -> ShardMap:
    return parse_shard_map(path.read_text(), yaml_format=path.suffix in {".yaml", ".yml"})


class ShardMapWatcher(WatchedFile[ShardMap]):
    """The shard map in force, following the mounted file (a ConfigMap folder's
    ``shard-map.json``, or a file)."""

    def __init__(self, path: Path, secrets_dir: Path = DEFAULT_SECRETS_DIR) -> None:
        if path.is_dir():
            path = path / "shard-map.json"
        self.secrets_dir = secrets_dir
        super().__init__("shard-map", path, self._load_changed)
        SHARD_MAP_RELOADS.labels(self.value.version).inc()
        self.subscribe(lambda new: SHARD_MAP_RELOADS.labels(new.version).inc())

    def _load_changed(self, path: Path) -> ShardMap:
        new = load_shard_map(path)
        current: ShardMap | None = getattr(self, "_value", None)
        if current is not None and new.version == current.version and \
                not new.same_content(current):
            raise ValueError(f"shard map content changed but its version {new.version} did not")
        return new

    def shard_for(self, category: str) -> str:
        return self.value.shard_for(category)

    def dsn_for(self, shard: str) -> str:
        return self.value.dsn_for(shard, self.secrets_dir)


def to_json(shard_map: ShardMap) -> bytes:
    """The canonical file content."""
    return orjson.dumps(shard_map.model_dump(mode="json", by_alias=True, exclude_none=True),
                        option=orjson.OPT_SORT_KEYS)
