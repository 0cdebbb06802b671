"""One real node for the real-node tests: its control plane, containerd, kubelet, kube-proxy and
CoreDNS, the shop's backing servers on the node's bridge, the operator in its Pod and the
sample shop's node overlay, all started once and shared by every real-node test (each
start costs minutes of the two cores)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kommerce.testbed.node_shop import NodeShop


# Package scope: the node and its shop go as soon as the real-node tests are done, so the
# rest of the suite does not share the two cores with them.
@pytest.fixture(scope="package")
def node_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeShop]:
    from kommerce.testbed.image import kommerce_image_archive
    from kommerce.testbed.node import NodeCluster, node_unavailable_reason
    from kommerce.testbed.node_shop import NEXT_SHOP_IMAGE, SHOP_IMAGE, NodeBackends, NodeShop

    if reason := node_unavailable_reason():
        pytest.skip(f"no real node on this machine: {reason}")
    workdir = tmp_path_factory.mktemp("node")
    archive = kommerce_image_archive()
    cluster = NodeCluster(workdir, images={SHOP_IMAGE: archive, NEXT_SHOP_IMAGE: archive}).start()
    backends: NodeBackends | None = None
    try:
        backends = NodeBackends(workdir / "backends").start()
        shop = NodeShop(cluster, backends).install()
        shop.seed_catalog()
        yield shop
    finally:
        # The node first: PostgreSQL waits for its clients (the Pods) before it stops.
        cluster.stop()
        if backends is not None:
            backends.stop()
