"""One real node for the real-node tests: its control plane, containerd, kubelet, kube-proxy and
CoreDNS, the shop's backing servers on the node's bridge, the operator in its Pod and the
sample shop's node overlay, all started once and shared by every test of
``test_real_node.py`` (each start costs minutes of the two cores). It is started by the
same function ``kommerce up --cluster`` uses on such a machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kommerce.testbed.node_shop import NodeShop


# Module scope: one node per machine, so it goes before the next module (which starts
# `kommerce up --cluster` on a node of its own), and the rest of the suite does not share
# the two cores with it.
@pytest.fixture(scope="module")
def node_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeShop]:
    from kommerce.testbed.node import node_unavailable_reason
    from kommerce.testbed.node_shop import start_node_shop

    if reason := node_unavailable_reason():
        pytest.skip(f"no real node on this machine: {reason}")
    running = start_node_shop(tmp_path_factory.mktemp("node"))
    try:
        yield running.shop
    finally:
        running.stop()
