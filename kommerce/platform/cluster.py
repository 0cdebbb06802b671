"""``kommerce up --cluster``: the test bed's local control plane next to the platform.

On a machine that can run a real node the shop runs on one instead
(``kommerce.platform.real_node``); what follows is the kwok cluster, used otherwise or with
``--node kwok``.

The control plane (etcd, apiserver, controllers, scheduler, kwok, Istio's CRDs), the CRDs
and RBAC, the operator running as its ServiceAccount, and the sample shop from
``manifests/samples``: ``kubectl get commerceservices`` then shows the shop the operator
reconciles. The cluster is rebuilt on every start (its folder is wiped): it is derived
entirely from the manifests, and a fresh PKI with old etcd data is a source of confusion,
not of value.

One thing differs from a real cluster: kwok's Pods run nothing, so a rollout's
pre-promotion checks, which ask the preview Service, would never get an answer. The sample
shop is applied with each check's ``url`` pointed at the same service running on this
machine (the product service ``kommerce up`` started), so a release manager's promote runs
real checks against a real server and flips. The operator only requests a check URL that
names a Service of the rollout's namespace, so it is started with exactly those loopback
URLs on its allowlist (``KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST``) and nothing more.

The operator is a process of this machine like the services: supervised (restarted when it
dies, ``kommerce restart kommerce-operator``), its log in the platform's ``logs/`` beside
theirs, its liveness endpoint its readiness. ``manifests/operator`` is applied without its
Deployment: kwok would show that Deployment's Pod ``Running 1/1`` whether or not the
operator runs, and the operator that runs is not that Pod.
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from rich.console import Console

from kommerce.platform.state import PLATFORM_CHILD_ENV, ProcessRecord
from kommerce.testbed.cache import REPO_ROOT
from kommerce.testbed.ports import LOOPBACK, free_port, wait_until
from kommerce.testbed.process import ServerProcess

if TYPE_CHECKING:
    from kommerce.platform.launcher import Platform
    from kommerce.testbed.kube import ControlPlane

SAMPLE_SHOP = REPO_ROOT / "manifests" / "samples"
OPERATOR_MANIFESTS = REPO_ROOT / "manifests" / "operator"
#: The operator's process, log (``logs/kommerce-operator.log``) and, in manifests/operator,
#: the Deployment left out here.
OPERATOR_NAME = "kommerce-operator"
#: The sample shop's namespace (manifests/samples/kustomization.yaml); the kubeconfig
#: ``up`` prints defaults to it, so ``kubectl get bgr`` needs no ``-n``.
SHOP_NAMESPACE = "kommerce-shop"
#: The kubeconfig handed to people: the admin's, with the shop as default namespace.
USER_KUBECONFIG = "kubeconfig"


def start_cluster(platform: Platform, console: Console) -> Path:
    """Start it all and return the kubeconfig to print; registers every process with
    ``platform`` so ``kommerce down`` (or a failure) stops them too. On a machine that can
    run a real node (``--node auto``, the default, or ``real``) the shop runs on one
    (``kommerce.platform.real_node``); otherwise on kwok, saying why."""
    from kommerce.platform.real_node import ClusterNode, choose_node, start_real_node
    from kommerce.testbed.kube import ControlPlane
    from kommerce.testbed.node import node_unavailable_reason

    node, fallback = choose_node(platform.cluster_node, node_unavailable_reason()
                                 if platform.cluster_node is not ClusterNode.KWOK else None)
    if node is ClusterNode.REAL:
        return start_real_node(platform, console, seed=platform.seed)
    if fallback:
        console.print(f"  [yellow]![/yellow] {fallback}")
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
                    {"kube-apiserver": plane.apiserver_port, "etcd": plane.etcd_port},
                    supervised=True)
    console.print(f"  [green]✓[/green] Kubernetes control plane at {plane.server} "
                  f"({time.monotonic() - began:.1f} s)")

    local = {record.name: f"http://{LOOPBACK}:{record.port}"
             for record in platform.state.processes if record.ready_url}
    sample = rendered_sample_shop(plane)
    shop = checks_on_local_services(sample, local)
    began = time.monotonic()
    with console.status("installing the CRDs and starting the operator"):
        start_operator(platform, plane, local_check_urls(sample, shop))
    console.print(f"  [green]✓[/green] CRDs installed, operator running "
                  f"({time.monotonic() - began:.1f} s)")

    with console.status("applying the sample shop"):
        plane.kubectl("apply", "--server-side", "-f", "-",
                      input_text=yaml.safe_dump_all(shop))
    console.print(f"  [green]✓[/green] sample shop applied ({SAMPLE_SHOP.relative_to(REPO_ROOT)}; "
                  "rollout checks ask the local services)")
    return user_kubeconfig(plane)


def operator_manifests(plane: ControlPlane) -> list[dict[str, Any]]:
    """``manifests/operator`` as kustomize renders it, without the operator's Deployment
    (see the module docstring): its namespace, ServiceAccount, RBAC, peering and metrics
    Service."""
    out = plane.kubectl("kustomize", str(OPERATOR_MANIFESTS)).stdout
    return [doc for doc in yaml.safe_load_all(out)
            if doc and not (doc.get("kind") == "Deployment"
                            and doc["metadata"]["name"] == OPERATOR_NAME)]


def start_operator(platform: Platform, plane: ControlPlane,
                   check_url_allowlist: tuple[str, ...]) -> ServerProcess:
    """Install the CRDs and RBAC, and run ``kommerce operator`` as its ServiceAccount,
    supervised, its log in the platform's logs; returns once its liveness endpoint
    answers."""
    from kommerce.testbed.operator import (
        OPERATOR_NAMESPACE,
        OPERATOR_SERVICE_ACCOUNT,
        install_crds,
    )
    from operators.bluegreen.check_urls import ALLOWLIST_ENV

    install_crds(plane)
    plane.kubectl("apply", "--server-side", "-f", "-",
                  input_text=yaml.safe_dump_all(operator_manifests(plane)))
    plane.wait_for_default_service_account(OPERATOR_NAMESPACE)
    kubeconfig = plane.service_account_kubeconfig(
        OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, duration_seconds=24 * 3600)
    liveness, metrics = free_port(), free_port()
    process = ServerProcess(
        OPERATOR_NAME,
        [sys.executable, "-m", "kommerce.cli", "operator", f"--liveness-port={liveness}",
         f"--metrics-port={metrics}"],
        log_path=platform.logs / f"{OPERATOR_NAME}.log",
        # Set even when empty, so an allowlist in the caller's environment never leaks in.
        env={"KUBECONFIG": str(kubeconfig), ALLOWLIST_ENV: ",".join(check_url_allowlist),
             PLATFORM_CHILD_ENV: "1"},
        cwd=REPO_ROOT,
    ).start()
    assert process.pid is not None
    platform.processes[OPERATOR_NAME] = process
    platform.track(ProcessRecord.of(OPERATOR_NAME, process.pid, liveness, process.log_path,
                                    ready_url=f"http://{LOOPBACK}:{liveness}/healthz",
                                    supervised=True))
    wait_until(lambda: _answers(f"http://{LOOPBACK}:{liveness}/healthz"), timeout=60,
               what="kommerce operator", interval=0.2, alive=process.exit_problem)
    return process


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def rendered_sample_shop(plane: ControlPlane) -> list[dict[str, Any]]:
    """``manifests/samples`` as kustomize renders it: namespace and labels applied."""
    out = plane.kubectl("kustomize", str(SAMPLE_SHOP)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def checks_on_local_services(manifests: list[dict[str, Any]],
                             local_urls: Mapping[str, str]) -> list[dict[str, Any]]:
    """The manifests with every BlueGreenRollout's pre-promotion checks given the ``url`` of
    the rolled-out component running locally (``local_urls``: component -> base URL), so the
    checks reach a server instead of a preview Service no Pod backs. A rollout whose
    component does not run locally (or a check that already names a url) is left as is."""
    components = {doc["metadata"]["name"]: doc["spec"]["component"] for doc in manifests
                  if doc.get("kind") == "CommerceService"}
    result = []
    for doc in manifests:
        if doc.get("kind") == "BlueGreenRollout":
            service = doc["spec"]["serviceRef"]["name"]
            base = local_urls.get(components.get(service, ""))
            checks = doc["spec"].get("prePromotionChecks")
            if base and checks:
                doc = copy.deepcopy(doc)
                checks = doc["spec"]["prePromotionChecks"]
                # The paths' defaults are the CRD's (operators/bluegreen/spec.py).
                aimed = [(check, "/ready") for check in checks.get("http", [])]
                if checks.get("errorRate"):
                    aimed.append((checks["errorRate"], "/metrics"))
                for check, default_path in aimed:
                    check.setdefault("url", base + check.get("path", default_path))
        result.append(doc)
    return result


def local_check_urls(sample: list[dict[str, Any]],
                     aimed: list[dict[str, Any]]) -> tuple[str, ...]:
    """The check URLs :func:`checks_on_local_services` set (in ``aimed``, not in ``sample``):
    the operator's allowlist, so it may ask those local servers and nothing else."""
    return tuple(sorted(set(_check_urls(aimed)) - set(_check_urls(sample))))


def _check_urls(manifests: list[dict[str, Any]]) -> list[str]:
    urls = []
    for doc in manifests:
        if doc.get("kind") != "BlueGreenRollout":
            continue
        checks = doc["spec"].get("prePromotionChecks") or {}
        for check in [*checks.get("http", []), checks.get("errorRate") or {}]:
            if check.get("url"):
                urls.append(str(check["url"]))
    return urls


def user_kubeconfig(plane: ControlPlane, path: Path | None = None) -> Path:
    """A copy of the admin kubeconfig whose context defaults to the shop's namespace (the
    admin one stays as the test bed wrote it, for the test bed's own kubectl calls), in
    the control plane's folder unless ``path`` says where."""
    path = path or plane.workdir / USER_KUBECONFIG
    shutil.copyfile(plane.kubeconfig, path)
    path.chmod(0o600)
    plane.kubectl("config", "set-context", "--current", f"--namespace={SHOP_NAMESPACE}",
                  kubeconfig=path)
    return path


def _record(platform: Platform, processes: list[ServerProcess], ports: dict[str, int], *,
            supervised: bool = False) -> None:
    """Track ``processes``; ``supervised`` ones are restarted by the supervisor when they
    die (the control plane's: etcd keeps its data in the cluster folder, the others hold
    no state of their own)."""
    known = {record.pid for record in platform.state.processes}
    for process in processes:
        if process.pid is None or process.pid in known:
            continue
        if supervised:
            platform.processes[process.name] = process
        platform.track(ProcessRecord.of(process.name, process.pid,
                                        ports.get(process.name, 0), process.log_path,
                                        supervised=supervised))
