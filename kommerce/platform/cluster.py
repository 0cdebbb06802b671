"""``kommerce up --cluster``: the test bed's local control plane next to the platform.

The control plane (etcd, apiserver, controllers, scheduler, kwok, Istio's CRDs), the CRDs
and RBAC, the operator running as its ServiceAccount, and the sample shop from
``manifests/samples``: ``kubectl get commerceservices -A`` then shows the shop the operator
reconciles. The cluster is rebuilt on every start (its folder is wiped): it is derived
entirely from the manifests, and a fresh PKI with old etcd data is a source of confusion,
not of value.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from kommerce.platform.state import ProcessRecord
from kommerce.testbed.cache import REPO_ROOT

if TYPE_CHECKING:
    from kommerce.platform.launcher import Platform
    from kommerce.testbed.process import ServerProcess

SAMPLE_SHOP = REPO_ROOT / "manifests" / "samples"


def start_cluster(platform: Platform, console: Console) -> Path:
    """Start it all and return the admin kubeconfig; registers every process with
    ``platform`` so ``kommerce down`` (or a failure) stops them too."""
    from kommerce.testbed.kube import ControlPlane
    from kommerce.testbed.operator import OperatorProcess

    workdir = platform.data_dir / "cluster"
    shutil.rmtree(workdir, ignore_errors=True)
    began = time.monotonic()
    plane = ControlPlane(workdir)
    platform.on_stop(plane.stop)
    with console.status("starting the Kubernetes control plane"):
        try:
            plane.start()
        finally:
            # ControlPlane keeps its processes private; their pids let `down` stop them.
            _record(platform, getattr(plane, "_processes", []),
                    {"kube-apiserver": plane.apiserver_port, "etcd": plane.etcd_port})
    console.print(f"  [green]✓[/green] Kubernetes control plane at {plane.server} "
                  f"({time.monotonic() - began:.1f} s)")

    began = time.monotonic()
    operator = OperatorProcess(plane)
    platform.on_stop(operator.stop)
    with console.status("installing the CRDs and starting the operator"):
        try:
            operator.start()
        finally:
            process = getattr(operator, "_process", None)
            _record(platform, [process] if process else [], {})
    console.print(f"  [green]✓[/green] CRDs installed, operator running "
                  f"({time.monotonic() - began:.1f} s)")

    with console.status("applying the sample shop"):
        plane.kubectl("apply", "--server-side", "-k", str(SAMPLE_SHOP))
    console.print(f"  [green]✓[/green] sample shop applied ({SAMPLE_SHOP.relative_to(REPO_ROOT)})")
    return plane.kubeconfig


def _record(platform: Platform, processes: list[ServerProcess], ports: dict[str, int]) -> None:
    known = {record.pid for record in platform.state.processes}
    for process in processes:
        if process.pid is None or process.pid in known:
            continue
        platform.track(ProcessRecord.of(process.name, process.pid,
                                        ports.get(process.name, 0), process.log_path))
