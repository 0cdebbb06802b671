"""``kommerce up --cluster`` on a machine that can run a real node (root, the node's
Debian packages): the shop runs as containers on a kubelet, so a release manager's flip
moves real traffic.

The node, its backing servers and the sample shop's node overlay are what the real-node
tests run against (``kommerce.testbed.node_shop.start_node_shop``); the platform's host
services still run beside it, as without ``--cluster``. The operator runs in its Pod from
the project's image, and a rollout's pre-promotion checks go to the preview Service as
written in the sample. ``kommerce down`` stops the node first (its Pods are PostgreSQL's
clients), then the rest.
"""

from __future__ import annotations

import shutil
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from kommerce.platform.state import ProcessRecord

if TYPE_CHECKING:
    from kommerce.platform.launcher import Platform


class ClusterNode(StrEnum):
    """Which node ``kommerce up --cluster`` runs the shop on."""

    AUTO = "auto"  # the real node when this machine can run one, else kwok (and why)
    REAL = "real"  # the real node, or fail saying what is missing
    KWOK = "kwok"  # kwok's fake node: Pods run nothing


def choose_node(wanted: ClusterNode, unavailable: str | None) -> tuple[ClusterNode, str | None]:
    """The node to use and, when ``auto`` falls back to kwok, the sentence saying why;
    ``unavailable`` is why no real node can run here (None: it can). Raises ValueError when
    a real node is asked for and cannot run."""
    if wanted is ClusterNode.KWOK:
        return ClusterNode.KWOK, None
    if unavailable is None:
        return ClusterNode.REAL, None
    if wanted is ClusterNode.REAL:
        raise ValueError(f"--node real: {unavailable}")
    return ClusterNode.KWOK, (f"no real node here ({unavailable}): kwok's fake node instead, "
                              "whose Pods run nothing; rollout checks ask the local services")


def start_real_node(platform: Platform, console: Console, *, seed: bool) -> Path:
    """Start the node and the shop on it; return the kubeconfig to print. Registers its
    stop with ``platform`` (before the host processes, see the module docstring) and its
    processes in the state file, so `kommerce status` lists them and `kommerce down` finds
    them even if this process dies."""
    from kommerce.platform.cluster import USER_KUBECONFIG, user_kubeconfig
    from kommerce.testbed.node import clean_up_node_leftovers
    from kommerce.testbed.node_shop import SHOP_NAMESPACE, start_node_shop

    workdir = platform.data_dir / "cluster"
    clean_up_node_leftovers(workdir)  # a node killed with its supervisor leaves mounts here
    shutil.rmtree(workdir, ignore_errors=True)
    platform.state.node_workdir = str(workdir)
    platform.state.save()
    began = time.monotonic()
    with console.status("starting the real node and the shop on it (the image is built "
                        "on the first run: minutes)"):
        running = start_node_shop(workdir, seed=seed)
    platform.on_stop(running.stop, first=True)
    known = {record.pid for record in platform.state.processes}
    for process in running.processes():
        if process.pid is not None and process.pid not in known:
            platform.track(ProcessRecord.of(process.name, process.pid, 0, process.log_path))
    gateway = running.shop.service_url("gateway", SHOP_NAMESPACE)
    console.print(f"  [green]✓[/green] real node with the sample shop, every CommerceService "
                  f"Ready ({time.monotonic() - began:.1f} s); the shop in the cluster: "
                  f"{gateway}/api (the gateway Service, through kube-proxy)")
    return user_kubeconfig(running.cluster.plane, workdir / USER_KUBECONFIG)
