"""``kommerce up --cluster`` on a machine that can run a real node: the shop runs as
containers on it, and the README's release manager's promote and abort move live traffic
with no failed request; ``kommerce down`` leaves nothing of the node behind.

Its own node: the one of ``test_real_node.py`` is gone by now (module scope), since a
machine runs one node at a time.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from kommerce.testbed.node import BRIDGE, node_unavailable_reason
from kommerce.testbed.node_shop import NEXT_SHOP_IMAGE, SHOP_IMAGE
from kommerce.testbed.ports import free_port, wait_until
from kommerce.testbed.traffic import Traffic
from tests.shop import Kubectl, kommerce

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]


def _settled_on(traffic: Traffic, color: str, after: float) -> bool:
    last_other = traffic.all_after(color, after)
    return last_other is not None and time.monotonic() - (after + last_other) > 3


def test_up_with_the_cluster_runs_the_shop_on_the_real_node_and_flips_live_traffic(
        tmp_path: Path) -> None:
    if reason := node_unavailable_reason():
        pytest.skip(f"no real node on this machine: {reason}")
    data_dir = tmp_path / "kommerce"
    try:
        out = kommerce("up", "--detach", "--cluster", "--no-seed", "--port", str(free_port()),
                       data_dir=data_dir, timeout=1500).stdout
        assert "real node with the sample shop" in out and "kwok" not in out, out
        report = json.loads(kommerce("status", "--json", data_dir=data_dir).stdout)
        assert report["ready"] is True, report
        names = {p["name"] for p in report["processes"]}
        assert {"kubelet", "containerd", "kube-apiserver"} <= names, names
        kubectl = Kubectl(report["kubeconfig"], timeout=120, rollout_timeout=600)
        # The operator is the one in its Pod, not a process of this machine.
        assert "kommerce-operator" not in names
        pods = kubectl.json("get", "pods", "-n", "kommerce-system")["items"]
        assert [p["status"]["phase"] for p in pods] == ["Running"]

        # The README's release manager, with the node's image names.
        kubectl("wait", "--for=condition=Ready", "bgr/product-service", "--timeout=300s")
        kubectl("patch", "bgr", "product-service", "--type", "merge", "-p", json.dumps(
            {"spec": {"green": {"image": NEXT_SHOP_IMAGE},
                      "prePromotionChecks": {"errorRate": {"sampleSeconds": 10}}}}))
        wait_until(lambda: kubectl.json("get", "bgr", "product-service")["status"].get(
            "phase") == "Paused", timeout=300, what="green staged", interval=1)
        product = kubectl("get", "service", "product-service", "-o",
                          "jsonpath={.spec.clusterIP}")
        traffic = Traffic(f"http://{product}/products?limit=1", workers=2)
        with traffic.running():
            time.sleep(3)
            promoted = time.monotonic()
            assert "traffic on green" in kubectl.rollout("promote", "product-service", "--wait")
            wait_until(lambda: _settled_on(traffic, "green", promoted), timeout=120,
                       what="every answer from green", interval=0.5)
            aborted = time.monotonic()
            assert "traffic on blue" in kubectl.rollout("abort", "product-service", "--wait")
            wait_until(lambda: _settled_on(traffic, "blue", aborted), timeout=120,
                       what="every answer from blue", interval=0.5)
        assert traffic.failures() == []
        assert {s.color for s in traffic.samples} == {"blue", "green"}
        rollout = kubectl.json("get", "bgr", "product-service")
        assert rollout["spec"]["blue"]["image"] == SHOP_IMAGE
        assert [(f["reason"], f["toColor"]) for f in rollout["status"]["history"]] == [
            ("Abort", "blue"), ("Promote", "green")]
    finally:
        kommerce("down", data_dir=data_dir, check=False, timeout=300)
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
