"""The product catalog's shard map: which database holds which category.

Why a contract: the ShardLayout operator renders a versioned map into a ConfigMap (key
``shard-map.json``) and the product service mounts it and routes every query with
:meth:`ShardMap.shard_for`. Both import :class:`ShardMap` and :func:`rendezvous_shard`
from here, so the operator writes what the service reads and both place an unlisted
category on the same shard::

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
rendezvous hashing. ``version`` is a hash of the content (:func:`content_version`), so the
service and the layout's ``status.mapVersion`` can say which map is in force.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

#: The ConfigMap key (file) holding the map.
SHARD_MAP_KEY = "shard-map.json"
#: Annotation on the ConfigMap repeating the map's version, for ``kubectl get -o yaml``.
SHARD_MAP_VERSION_ANNOTATION = "kommerce.io/shard-map-version"
#: The format this module writes and the newest it reads.
SUPPORTED_FORMAT = 1
HASH_ALGORITHM = "rendezvous-sha256"
#: Where a shard's ``databaseSecret`` is mounted as ``<secret>/<key>``.
DEFAULT_SECRETS_DIR = Path("/etc/kommerce/secrets")
_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def rendezvous_shard(category: str, shard_names: list[str]) -> str:
    """Highest-random-weight hashing: adding or removing a shard moves only the categories
    that hash to it, not a reshuffle of everything (as ``hash % n`` would). The operator
    (``status``, resharding) and the product service (placing a product) both call this
    one, so they agree on where an unlisted category lives."""

    def weight(shard: str) -> bytes:
        return hashlib.sha256(f"{shard}/{category}".encode()).digest()

    return max(sorted(shard_names), key=weight)


class UnlistedPlacement(StrEnum):
    """Where products of a category that no shard lists are stored."""

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

    @classmethod
    def versioned(cls, **fields: Any) -> ShardMap:
        """A map of ``fields`` whose ``version`` is the hash of its content (how the
        operator writes it): the same content always gets the same version."""
        draft = cls.model_validate({**fields, "version": "draft"})
        return draft.model_copy(update={"version": content_version(draft.wire())})

    def wire(self) -> dict[str, Any]:
        """The document as written (camelCase, unset sources left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """The ConfigMap's file content."""
        return json.dumps(self.wire(), sort_keys=True, indent=2) + "\n"


def content_version(document: dict[str, Any]) -> str:
    """A hash of the map's content, ``version`` itself left out."""
    body = {key: value for key, value in document.items() if key != "version"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_shard_map_json(text: str) -> ShardMap:
    """The map in ``text`` (JSON, a key given twice refused); ValueError naming the first
    problems otherwise."""
    return ShardMap.model_validate(json.loads(text, object_pairs_hook=_no_duplicates))


