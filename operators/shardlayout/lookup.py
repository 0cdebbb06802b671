"""The ShardLayout a product CommerceService names, as its renderers need it.

Read from the API server when a footprint is rendered, not from an index: only the product
service names a layout, so it is one GET where an index would be one more watch stream for
every operator process.
"""

from __future__ import annotations

from operators.meta import API_VERSION
from operators.runtime import kube
from operators.schema import InvalidSpec, parse_spec
from operators.shardlayout.spec import RESOURCE, ShardLayoutSpec


def shard_layout_named(namespace: str, name: str | None) -> ShardLayoutSpec | None:
    """The layout's parsed spec; None when no layout is named, or it does not exist or is
    invalid (its own status says which; the Pods then wait for its map ConfigMap)."""
    if name is None:
        return None
    body = kube().get(API_VERSION, RESOURCE.kind, namespace, name)
    if body is None:
        return None
    try:
        return parse_spec(ShardLayoutSpec, body.get("spec") or {})
    except InvalidSpec:
        return None
