"""The Kommerce operator run against a test-bed cluster, as its own ServiceAccount.

The CRDs and ``manifests/operator`` (namespace, ServiceAccount, ClusterRole and binding) are
applied with the real kubectl, then ``kommerce operator`` runs as a local process with a
bound token of the ``kommerce-operator`` ServiceAccount: any permission the RBAC manifests
forget shows up as a 403, exactly as it would in a cluster.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import httpx

from kommerce.testbed.cache import REPO_ROOT, say
from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.ports import LOOPBACK, free_port, wait_until
from kommerce.testbed.process import ServerProcess

OPERATOR_NAMESPACE = "kommerce-system"
OPERATOR_SERVICE_ACCOUNT = "kommerce-operator"
CRDS = ("commerceservices", "bluegreenrollouts", "circuitbreakerpolicies", "shardlayouts")


def install_crds(plane: ControlPlane) -> None:
    plane.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  *(f"crd/{plural}.kommerce.io" for plural in CRDS))


@dataclass
class OperatorProcess:
    plane: ControlPlane
    liveness_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    _process: ServerProcess | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def start(self) -> OperatorProcess:
        install_crds(self.plane)
        self.plane.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "manifests/operator"))
        self.plane.wait_for_default_service_account(OPERATOR_NAMESPACE)
        kubeconfig = self.plane.service_account_kubeconfig(
            OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, duration_seconds=24 * 3600)
        self._process = ServerProcess(
            "kommerce-operator",
            [sys.executable, "-m", "kommerce.cli", "operator",
             f"--liveness-port={self.liveness_port}", f"--metrics-port={self.metrics_port}",
             *self.extra_args],
            log_path=self.plane.workdir / "logs" / f"operator-{self.liveness_port}.log",
            env={"KUBECONFIG": str(kubeconfig)},
        ).start()
        wait_until(self._alive, timeout=60, what="kommerce operator", interval=0.2,
                   alive=self._process.exit_problem)
        say(f"kommerce operator running as {OPERATOR_NAMESPACE}/{OPERATOR_SERVICE_ACCOUNT}")
        return self

    def _alive(self) -> bool:
        url = f"http://{LOOPBACK}:{self.liveness_port}/healthz"
        return httpx.get(url, timeout=1).status_code == 200

    def log(self) -> str:
        assert self._process is not None
        return self._process.log_path.read_text(errors="replace")

    def restart(self) -> OperatorProcess:
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
