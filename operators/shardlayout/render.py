"""ShardLayout -> the versioned shard map ConfigMap the product service hot-reloads; pure.

The map is self-contained (every category's shard spelled out, plus the rule for unlisted
ones), so the service's loader needs no knowledge of the CRD; ``version`` is a hash of the
content, so the service and ``status.mapVersion`` can say which map is in force.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

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
from operators.shardlayout.spec import (
    HASH_ALGORITHM,
    SHARD_MAP_KEY,
    ShardLayoutSpec,
    shard_map_name,
)

KIND = "ShardLayout"
SHARD_MAP_FORMAT = 1


def shard_map(name: str, spec: ShardLayoutSpec) -> dict[str, Any]:
    """The shard map document, ``version`` included."""
    body: dict[str, Any] = {
        "format": SHARD_MAP_FORMAT,
        "layout": name,
        "defaultShard": spec.default_shard,
        "unlistedCategories": spec.unlisted_categories.value,
        "hashAlgorithm": HASH_ALGORITHM,
        "shards": sorted(
            ({"name": shard.name,
              "databaseSecret": {"name": shard.database.name, "key": shard.database.key},
              "categories": sorted(shard.categories)} for shard in spec.shards),
            key=lambda shard: shard["name"]),
        "categories": dict(sorted(
            (category, shard.name) for shard in spec.shards for category in shard.categories)),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {"version": hashlib.sha256(canonical.encode()).hexdigest()[:16], **body}


def render_shard_map(name: str, namespace: str, spec: ShardLayoutSpec | Mapping[str, Any],
                     uid: str) -> dict[str, Any]:
    """The shard map ConfigMap, owned by the layout; the version is also an annotation so
    ``kubectl get cm -o yaml`` shows it without parsing the JSON."""
    check_resource_name(name)
    parsed = spec if isinstance(spec, ShardLayoutSpec) else parse_spec(ShardLayoutSpec, spec)
    document = shard_map(name, parsed)
    labels = {LABEL_NAME: "product", LABEL_INSTANCE: name, LABEL_COMPONENT: "shard-map",
              LABEL_PART_OF: PART_OF, LABEL_MANAGED_BY: MANAGED_BY}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(shard_map_name(name), namespace, labels,
                                [owner_reference(KIND, name, uid)],
                                {"kommerce.io/shard-map-version": document["version"]}),
        "data": {SHARD_MAP_KEY: json.dumps(document, sort_keys=True, indent=2) + "\n"},
    }
