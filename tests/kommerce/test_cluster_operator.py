"""The operator of ``kommerce up --cluster`` is one of the platform's processes: supervised
(killed, it is started again and reconciles again, as are etcd and the apiserver), its log
in ``logs/`` beside the services', and no fake Pod claiming to be it. An operator started by
hand per the README (``kommerce operator --standalone`` with the cluster's ``KUBECONFIG``)
is stopped by ``kommerce down``.

The cluster is started the way ``up --cluster --node kwok`` starts it (``start_cluster``;
on a real node the operator is a Pod instead) on a platform of its own without the
services, which this needs none of; the supervisor is the one ``up`` runs, ticked by the
test.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from kommerce.platform.cluster import OPERATOR_NAME, start_cluster
from kommerce.platform.launcher import Platform
from kommerce.platform.real_node import ClusterNode
from kommerce.platform.state import BY_HAND_DIR, PlatformState, started_by_hand
from kommerce.platform.supervisor import RestartPolicy, Supervisor
from kommerce.testbed.cache import REPO_ROOT
from kommerce.testbed.kube import control_plane_binaries
from kommerce.testbed.ports import free_port, wait_until
from kommerce.up_cli import down

pytestmark = pytest.mark.kube


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    data_dir = tmp_path / "kommerce"
    data_dir.mkdir()
    platform = Platform(data_dir, gateway_port=free_port(), console=Console(file=io.StringIO()),
                        seed=False, cluster=True, cluster_node=ClusterNode.KWOK)
    try:
        yield platform
    finally:
        platform.stop()


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run([str(control_plane_binaries()["kubectl"]),
                           f"--kubeconfig={kubeconfig}", *args], check=True,
                          capture_output=True, text=True, timeout=60, input=stdin).stdout


def _service_ready(kubeconfig: Path, name: str) -> bool:
    found = json.loads(_kubectl(kubeconfig, "get", "commerceservice", name, "-o", "json",
                                "--ignore-not-found") or "{}")
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (found.get("status") or {}).get("conditions") or [])


def test_the_clusters_operator_and_control_plane_are_supervised_and_no_fake_pod_shows(
        platform: Platform) -> None:
    kubeconfig = start_cluster(platform, platform.console)
    record = platform.state.record(OPERATOR_NAME)
    assert record is not None and record.supervised and record.ready()
    assert Path(record.log).parent == platform.logs, record.log
    assert "kopf" in Path(record.log).read_text().lower()

    # Nothing in the cluster says "the operator runs" but the operator's own writes.
    assert _kubectl(kubeconfig, "get", "pods,deployments", "-n", "kommerce-system",
                    "-o", "name") == ""

    supervisor = Supervisor(platform.state, platform.processes, logs=platform.logs,
                            policy=RestartPolicy(first_delay=0.2))
    killed = record.pid
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: (supervisor.tick(), record.pid != killed and record.ready())[1],
               timeout=90, what="the operator started again and live", interval=0.2)
    assert record.restarts == 1 and record.last_exit == "killed by SIGKILL"
    saved = PlatformState.load(platform.data_dir)
    assert saved is not None and (saved.record(OPERATOR_NAME) or record).pid == record.pid
    log = Path(record.log).read_text()
    assert f"{OPERATOR_NAME} (pid {killed}) killed by SIGKILL" in log

    # The control plane is supervised too: etcd, then the apiserver, killed and back.
    for name in ("etcd", "kube-apiserver"):
        _kill_and_wait_restarted(supervisor, platform, name)
    # And the operator reconciles through it all: a CommerceService applied now is Ready.
    _kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
        "metadata": {"name": "after-restart"},
        "spec": {"component": "review", "image": "shop:1", "replicas": 1,
                 "autoscaling": {"enabled": False},
                 "routes": [{"pathPrefix": "/api/after-restart"}]}}))
    wait_until(lambda: _service_ready(kubeconfig, "after-restart"), timeout=60,
               what="a CommerceService reconciled by the restarted operator", interval=0.5)


def _kill_and_wait_restarted(supervisor: Supervisor, platform: Platform, name: str) -> None:
    record = platform.state.record(name)
    assert record is not None and record.supervised and record.ready(), record
    killed = record.pid
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: (supervisor.tick(), record.pid != killed and record.ready())[1],
               timeout=90, what=f"{name} started again and ready", interval=0.2)
    assert record.last_exit == "killed by SIGKILL", record


def test_down_stops_an_operator_started_by_hand_against_the_cluster(
        platform: Platform, tmp_path: Path) -> None:
    kubeconfig = start_cluster(platform, platform.console)
    assert kubeconfig.parent.name == "cluster"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("KOMMERCE_PLATFORM")}
    # As a script would start it: in the shell's process group, not a group of its own.
    by_hand = subprocess.Popen(
        [sys.executable, "-m", "kommerce.cli", "operator", "--standalone",
         f"--liveness-port={free_port()}", f"--metrics-port={free_port()}"],
        env={**env, "KUBECONFIG": str(kubeconfig)}, cwd=REPO_ROOT,
        stdout=open(tmp_path / "by-hand.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        wait_until(lambda: any(r.pid == by_hand.pid
                               for _, r in started_by_hand(platform.data_dir)),
                   timeout=60, what="the hand-started operator registered", interval=0.2)
        (_, record), = started_by_hand(platform.data_dir)
        assert record.running() and not record.own_group
        supervised = platform.state.record(OPERATOR_NAME)
        assert supervised is not None and supervised.running()

        began = time.monotonic()
        down(data_dir=platform.data_dir)
        assert by_hand.wait(timeout=5) is not None, "kommerce down left it running"
        assert time.monotonic() - began < 60
        assert not supervised.running()
        assert list((platform.data_dir / BY_HAND_DIR).glob("*.json")) == []
        assert PlatformState.load(platform.data_dir) is None
        assert "`kommerce down` stops this operator too" in (tmp_path / "by-hand.log").read_text()
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()
