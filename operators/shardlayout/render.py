"""ShardLayout -> the versioned shard map ConfigMap the product service hot-reloads; pure.

The map (:class:`kommerce.contracts.shard_map.ShardMap`) is self-contained (every
category's shard spelled out, plus the rule for unlisted ones), so the service's loader
needs no knowledge of the CRD; ``version`` is a hash of the content, so the service and
``status.mapVersion`` can say which map is in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kommerce.contracts.shard_map import (
    HASH_ALGORITHM,
    SHARD_MAP_KEY,
    SHARD_MAP_VERSION_ANNOTATION,
    SUPPORTED_FORMAT,
    ShardMap,
)
from operators.meta import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    PART_OF,
    check_resource_name,
    object_meta,
    owner_reference,
)
from operators.schema import parse_spec
from operators.shardlayout.spec import ShardLayoutSpec, shard_map_name

KIND = "ShardLayout"
SHARD_MAP_FORMAT = SUPPORTED_FORMAT


def layout_map(name: str, spec: ShardLayoutSpec) -> ShardMap:
    """The shard map of layout ``name``, versioned by its content."""
    return ShardMap.versioned(
        format=SHARD_MAP_FORMAT,
        layout=name,
        default_shard=spec.default_shard,
        unlisted_categories=spec.unlisted_categories.value,
        hash_algorithm=HASH_ALGORITHM,
        shards=sorted(
            ({"name": shard.name,
              "database_secret": {"name": shard.database.name, "key": shard.database.key},
              "categories": sorted(shard.categories)} for shard in spec.shards),
            key=lambda shard: str(shard["name"])),
        categories=dict(sorted(
            (category, shard.name) for shard in spec.shards for category in shard.categories)),
    )


def shard_map(name: str, spec: ShardLayoutSpec) -> dict[str, Any]:
    """The shard map document as written, ``version`` included."""
    return layout_map(name, spec).wire()


def render_shard_map(name: str, namespace: str, spec: ShardLayoutSpec | Mapping[str, Any],
                     uid: str) -> dict[str, Any]:
    """The shard map ConfigMap, owned by the layout; the version is also an annotation so
    ``kubectl get cm -o yaml`` shows it without parsing the JSON."""
    check_resource_name(name)
    parsed = spec if isinstance(spec, ShardLayoutSpec) else parse_spec(ShardLayoutSpec, spec)
    document = layout_map(name, parsed)
    labels = {LABEL_NAME: "product", LABEL_INSTANCE: name, LABEL_COMPONENT: "shard-map",
              LABEL_PART_OF: PART_OF, LABEL_MANAGED_BY: MANAGED_BY}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(shard_map_name(name), namespace, labels,
                                [owner_reference(KIND, name, uid)],
                                {SHARD_MAP_VERSION_ANNOTATION: document.version}),
        "data": {SHARD_MAP_KEY: document.to_json()},
    }
