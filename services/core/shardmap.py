"""The product service's side of the shard map: reading the mounted file and following it.

The format — :class:`~kommerce.contracts.shard_map.ShardMap`, its validation and
:func:`~kommerce.contracts.shard_map.rendezvous_shard` — is the contract the ShardLayout
operator writes (:mod:`kommerce.contracts.shard_map`). Here the file is read (JSON, or YAML
by file suffix) and followed: a new map is picked up without a restart; one that fails
validation — or changes content without changing ``version`` — is refused and the map in
force stays (see :mod:`services.core.reload`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from kommerce.contracts.shard_map import (
    DEFAULT_SECRETS_DIR,
    HASH_ALGORITHM,
    SHARD_MAP_KEY,
    SUPPORTED_FORMAT,
    SecretKeyRef,
    Shard,
    ShardMap,
    UnlistedPlacement,
    parse_shard_map_json,
    rendezvous_shard,
)
from services.core.metrics import counter
from services.core.reload import WatchedFile

__all__ = ["DEFAULT_SECRETS_DIR", "HASH_ALGORITHM", "SUPPORTED_FORMAT", "SecretKeyRef", "Shard",
           "ShardMap", "ShardMapWatcher", "UnlistedPlacement", "load_shard_map",
           "parse_shard_map", "rendezvous_shard", "to_json"]

SHARD_MAP_RELOADS = counter("shard_map_loads_total", "Shard maps taken into force", ["version"])


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


def parse_shard_map(text: str, *, yaml_format: bool = False) -> ShardMap:
    if yaml_format:
        return ShardMap.model_validate(yaml.load(text, Loader=_UniqueKeyLoader))  # SafeLoader
    return parse_shard_map_json(text)


def load_shard_map(path: Path) -> ShardMap:
    return parse_shard_map(path.read_text(), yaml_format=path.suffix in {".yaml", ".yml"})


class ShardMapWatcher(WatchedFile[ShardMap]):
    """The shard map in force, following the mounted file (a ConfigMap folder's
    ``shard-map.json``, or a file)."""

    def __init__(self, path: Path, secrets_dir: Path = DEFAULT_SECRETS_DIR) -> None:
        if path.is_dir():
            path = path / SHARD_MAP_KEY
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
