"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, all built from their Go modules.

kwok plays the kubelet for fake Nodes, so Pods are scheduled, become Running and Ready, and
Deployments really become Available; the garbage collector, ReplicaSet and Deployment
controllers are the real ones. The apiserver serves TLS with client-certificate auth and RBAC,
so a test can act as a ServiceAccount and see exactly which permissions are missing.
Istio's CRDs come from the ``istio.io/api`` module so VirtualServices and DestinationRules are
validated by Istio's real schemas.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kommerce.testbed.cache import say, step
from kommerce.testbed.gobuild import go_binaries, go_module_dir
from kommerce.testbed.pki import ClusterPKI, create_pki, issue_certificate
from kommerce.testbed.ports import LOOPBACK, free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess

KUBERNETES_VERSION = "v1.35.4"  # pinned in gomod/kube/go.mod
ETCD_VERSION = "v3.6.16"  # pinned in gomod/etcd/go.mod
KWOK_VERSION = "v0.7.0"  # pinned in gomod/kwok/go.mod
#: The name the apiserver presents to aggregated API servers it proxies to.
FRONT_PROXY_CLIENT = "front-proxy-client"
ISTIO_API_VERSION = "v1.31.4"
SERVICE_CIDR = "10.96.0.0/16"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def control_plane_binaries() -> dict[str, Path]:
    """Build (first run) or find (later runs) every binary the control plane needs."""
    binaries = go_binaries("kube", {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    })
    binaries |= go_binaries("etcd", {"etcd": "go.etcd.io/etcd/server/v3"})
    binaries |= go_binaries("kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"})
    return binaries


def istio_crds_file() -> Path:
    """Istio's generated CRDs, from the ``istio.io/api`` module in Go's module cache."""
    return go_module_dir("istio.io/api", ISTIO_API_VERSION) / "kubernetes" / \
        "customresourcedefinitions.gen.yaml"


def write_kubeconfig(path: Path, server: str, ca: Path, *, user: str,
                     client_cert: Path | None = None, client_key: Path | None = None,
                     token: str | None = None, namespace: str = "default") -> Path:
    """A kubeconfig with one cluster, one user and one context, for a cert or a token."""
    credentials: dict[str, str] = {}
    if client_cert is not None and client_key is not None:
        credentials = {"client-certificate": str(client_cert), "client-key": str(client_key)}
    if token is not None:
        credentials = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kommerce", "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {
            "cluster": "kommerce", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """The whole local cluster. ``start()`` returns once a Deployment could become Available:
    the apiserver is ready, the controllers and scheduler run, the fake node is Ready and the
    Istio CRDs are established."""

    workdir: Path
    fake_nodes: int = 1
    # A real node's Pods reach the apiserver through the ``kubernetes`` Service, so its
    # endpoint must be an address they can route to; kwok's fake Pods need none.
    advertise_address: str = LOOPBACK
    etcd_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    binaries: dict[str, Path] = field(default_factory=dict)
    pki: ClusterPKI | None = None
    _processes: list[ServerProcess] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.workdir / "admin.kubeconfig"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with step(f"Kubernetes {KUBERNETES_VERSION} binaries"):
            self.binaries = control_plane_binaries()
        started = time.monotonic()
        extra_ips = () if self.advertise_address == LOOPBACK else (self.advertise_address,)
        self.pki = create_pki(self.workdir / "pki", server_ips=extra_ips)
        write_kubeconfig(self.kubeconfig, self.server, self.pki.ca.cert, user="admin",
                         client_cert=self.pki.admin.cert, client_key=self.pki.admin.key)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            if self.fake_nodes:
                self._start_kwok()
                self._register_fake_nodes()
            self._install_istio_crds()
            self.wait_for_default_service_account("default")
        except BaseException:
            self.stop()
            raise
        say(f"control plane ready at {self.server} in {time.monotonic() - started:.1f}s "
            f"(kubeconfig {self.kubeconfig})")
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- components ----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str | Path]) -> ServerProcess:
        process = ServerProcess(name, argv, log_path=self.workdir / "logs" / f"{name}.log")
        self._processes.append(process.start())
        return process

    def _start_etcd(self) -> None:
        peer_port = free_port()
        etcd = self._spawn("etcd", [
            self.binaries["etcd"],
            "--data-dir", self.workdir / "etcd",
            "--listen-client-urls", f"http://{LOOPBACK}:{self.etcd_port}",
            "--advertise-client-urls", f"http://{LOOPBACK}:{self.etcd_port}",
            "--listen-peer-urls", f"http://{LOOPBACK}:{peer_port}",
            "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{peer_port}",
            "--initial-cluster", f"default=http://{LOOPBACK}:{peer_port}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes", str(2 * 1024**3),
            "--log-level", "warn",
        ])
        wait_until(lambda: port_open(self.etcd_port), timeout=30, what="etcd",
                   alive=etcd.exit_problem)

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        real_node = self.advertise_address != LOOPBACK
        node_flags = [
            # Pods connect from the bridge; the kubelet is authorized as its Node.
            "--bind-address=0.0.0.0",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={self.pki.admin.cert}",
            f"--kubelet-client-key={self.pki.admin.key}",
            f"--kubelet-certificate-authority={self.pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--endpoint-reconciler-type=lease",
            *self._aggregation_flags(),
        ] if real_node else [
            f"--bind-address={LOOPBACK}",
            "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none",
        ]
        apiserver = self._spawn("kube-apiserver", [
            self.binaries["kube-apiserver"], *node_flags,
            f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
            f"--advertise-address={self.advertise_address}",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki.apiserver.cert}",
            f"--tls-private-key-file={self.pki.apiserver.key}",
            f"--client-ca-file={self.pki.ca.cert}",
            f"--service-account-key-file={self.pki.service_account_pub}",
            f"--service-account-signing-key-file={self.pki.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            f"--profiling={'true' if os.environ.get('KOMMERCE_TESTBED_PROFILING') else 'false'}",
            "--v=1",
        ])
        wait_until(self._apiserver_ready, timeout=120, what="kube-apiserver", interval=0.25,
                   alive=apiserver.exit_problem)

    def _aggregation_flags(self) -> list[str]:
        """The aggregation layer, for the real node's metrics-server (``metrics.k8s.io``):
        the apiserver proxies to it as ``front-proxy-client`` and names the caller in
        headers it trusts only from that certificate. The apiserver dials the metrics
        server's endpoint directly (it runs on the host, not behind kube-proxy)."""
        assert self.pki is not None
        front = issue_certificate(self.pki.ca, "front-proxy-client", FRONT_PROXY_CLIENT)
        return [
            f"--requestheader-client-ca-file={self.pki.ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={front.cert}",
            f"--proxy-client-key-file={front.key}",
            "--enable-aggregator-routing=true",
        ]

    def _apiserver_ready(self) -> bool:
        import ssl

        import httpx

        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        response = httpx.get(f"{self.server}/readyz", verify=context, timeout=2)
        return response.status_code == 200

    def _start_controllers(self) -> None:
        assert self.pki is not None
        common = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            f"--bind-address={LOOPBACK}",
            # The default client limits (20 QPS in the controller-manager) are for sharing a
            # real cluster; here they would make the controllers, not the code under test,
            # the bottleneck of every scale test.
            "--kube-api-qps=300",
            "--kube-api-burst=600",
            "--v=1",
        ]
        self._spawn("kube-controller-manager", [
            self.binaries["kube-controller-manager"], *common,
            f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca.cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The HPA controller at its default 15 s period, as on a real cluster: without a
            # metrics server every sync of every HPA reads the scale and records a failed
            # metric, so a shorter period multiplies that work by the number of HPAs.
            "--horizontal-pod-autoscaler-sync-period=15s",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=40",
            # Fake nodes never fail. Without a long grace period, a CPU-starved moment that
            # delays kwok's heartbeat marks the node NotReady, the controller flips every Pod
            # to Ready=False, and kwok (which already made them Ready) never flips them back.
            # (The controller itself must run: it lifts the not-ready taint new nodes get.)
            "--node-monitor-grace-period=3600s",
        ])
        self._spawn("kube-scheduler", [
            self.binaries["kube-scheduler"], *common, f"--secure-port={free_port()}",
        ])

    def _start_kwok(self) -> None:
        self._spawn("kwok", [
            self.binaries["kwok"],
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
            "--cidr=10.244.0.0/16",
            f"--node-ip={LOOPBACK}",
            f"--server-address={LOOPBACK}:{free_port()}",
        ])

    def _register_fake_nodes(self) -> None:
        for index in range(self.fake_nodes):
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{index}",
                    "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                    "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-node-{index}",
                               "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
                },
                "status": {
                    "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "5000"},
                    "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "5000"},
                },
            }
            self.kubectl_apply_manifest(node)
        wait_until(self._nodes_ready, timeout=60, what="kwok fake nodes", interval=0.25)

    def _nodes_ready(self) -> bool:
        nodes = self.kubectl_json("get", "nodes")["items"]
        ready = [n for n in nodes for c in n.get("status", {}).get("conditions", [])
                 if c["type"] == "Ready" and c["status"] == "True"]
        return len(ready) >= self.fake_nodes

    def _install_istio_crds(self) -> None:
        with step(f"Istio {ISTIO_API_VERSION} CRDs"):
            self.kubectl("apply", "--server-side", "-f", str(istio_crds_file()))
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                         "crd/virtualservices.networking.istio.io",
                         "crd/destinationrules.networking.istio.io")

    # -- helpers for tests and for `kommerce up --cluster` --------------------------------

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input_text: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        result = subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={kubeconfig or self.kubeconfig}",
             *args],
            input=input_text, capture_output=True, text=True, timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        import json

        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def kubectl_apply_manifest(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--field-manager=kommerce-testbed", "-f", "-",
                     input_text=yaml.safe_dump(manifest))

    def wait_for_default_service_account(self, namespace: str, timeout: float = 60) -> None:
        """Pods cannot be created in a namespace until the controller-manager made its
        ``default`` ServiceAccount; tests that create namespaces wait for it here."""
        def exists() -> bool:
            return self.kubectl("get", "serviceaccount", "default", "-n", namespace,
                                check=False).returncode == 0
        wait_until(exists, timeout=timeout, what=f"ServiceAccount {namespace}/default",
                   interval=0.2)

    def create_namespace(self, name: str) -> str:
        self.kubectl_apply_manifest({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": name}})
        self.wait_for_default_service_account(name)
        return name

    def service_account_kubeconfig(self, namespace: str, name: str,
                                   duration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount with a bound token, so a test
        runs code with exactly the permissions RBAC grants that account."""
        assert self.pki is not None
        token = self.kubectl("create", "token", name, "-n", namespace,
                             f"--duration={duration_seconds}s").stdout.strip()
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(path, self.server, self.pki.ca.cert,
                                user=f"{namespace}-{name}", token=token, namespace=namespace)

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """An official-client ``ApiClient`` for this cluster (admin unless told otherwise)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

