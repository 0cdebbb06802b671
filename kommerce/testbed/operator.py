"""The Kommerce operator run against a test-bed cluster, as its own ServiceAccount.

The CRDs and ``manifests/operator`` (namespace, ServiceAccount, ClusterRole and binding) are
applied with the real kubectl, then ``kommerce operator`` runs as a local process with a
bound token of the ``kommerce-operator`` ServiceAccount: any permission the RBAC manifests
forget shows up as a 403, exactly as it would in a cluster.

Like the operator in a cluster it starts with no check-URL allowlist: a rollout's checks may
ask only Services of its own namespace. ``check_url_allowlist`` (or, for a stretch of a test,
:meth:`OperatorProcess.allowing_check_urls`) lets it reach the loopback servers that stand in
for preview Pods, since kwok's Pods serve nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from kommerce.testbed.cache import REPO_ROOT, say
from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.ports import LOOPBACK, free_port, wait_until
from kommerce.testbed.process import ServerProcess
from operators.bluegreen.check_urls import ALLOWLIST_ENV

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
    #: Whose token it runs with; manifests/operator is applied only for the default one (a
    #: test of another RBAC variant installs that variant itself).
    service_account: str = OPERATOR_SERVICE_ACCOUNT
    #: ``KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST`` entries (URL prefixes or host:port).
    check_url_allowlist: tuple[str, ...] = ()
    _process: ServerProcess | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def start(self) -> OperatorProcess:
        install_crds(self.plane)
        if self.service_account == OPERATOR_SERVICE_ACCOUNT:
            self.plane.kubectl("apply", "--server-side", "-k",
                               str(REPO_ROOT / "manifests/operator"))
        self.plane.wait_for_default_service_account(OPERATOR_NAMESPACE)
        kubeconfig = self.plane.service_account_kubeconfig(
            OPERATOR_NAMESPACE, self.service_account, duration_seconds=24 * 3600)
        self._process = ServerProcess(
            "kommerce-operator",
            [sys.executable, "-m", "kommerce.cli", "operator",
             f"--liveness-port={self.liveness_port}", f"--metrics-port={self.metrics_port}",
             *self.extra_args],
            log_path=self.plane.workdir / "logs" / f"operator-{self.liveness_port}.log",
            # Set even when empty, so an allowlist in the caller's environment never leaks in.
            env={"KUBECONFIG": str(kubeconfig),
                 ALLOWLIST_ENV: ",".join(self.check_url_allowlist)},
        ).start()
        wait_until(self._alive, timeout=60, what="kommerce operator", interval=0.2,
                   alive=self._process.exit_problem)
        say(f"kommerce operator running as {OPERATOR_NAMESPACE}/{self.service_account}")
        return self

    def _alive(self) -> bool:
        url = f"http://{LOOPBACK}:{self.liveness_port}/healthz"
        return httpx.get(url, timeout=1).status_code == 200

    def log(self) -> str:
        assert self._process is not None
        return self._process.log_path.read_text(errors="replace")

    @contextmanager
    def allowing_check_urls(self, *entries: str) -> Iterator[OperatorProcess]:
        """Run with ``entries`` as the check-URL allowlist until the block ends (the operator
        reads it at start, so this restarts it on the way in and on the way out)."""
        previous = self.check_url_allowlist
        self.check_url_allowlist = entries
        self.restart()
        try:
            yield self
        finally:
            self.check_url_allowlist = previous
            self.restart()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stopped until the block ends, so another operator can be tried on the cluster
        without two of them reconciling the same objects."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def restart(self) -> OperatorProcess:
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
