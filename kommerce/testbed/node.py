"""A real Kubernetes node on this machine: containerd + runc, a CNI bridge, the kubelet,
kube-proxy and CoreDNS, joined to a :class:`~kommerce.testbed.kube.ControlPlane`.

kwok plays the kubelet for the fast operator tests; this node really starts the containers
the operators render, so probes, mounted ConfigMaps, Service DNS and traffic are real. The
node is one per machine (one bridge, one set of iptables rules), so tests share it.

Pods reach the host through the bridge's gateway address, :data:`NODE_IP`: the apiserver
(behind the ``kubernetes`` Service), CoreDNS, and the backing servers the test bed starts
there, which the shop reaches through Services without selectors, the way a shop reaches
managed databases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kommerce.testbed.cache import say, step
from kommerce.testbed.gobuild import go_binaries
from kommerce.testbed.kube import ControlPlane, write_kubeconfig
from kommerce.testbed.pki import issue_certificate
from kommerce.testbed.ports import free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess

BRIDGE = "kommerce0"
POD_SUBNET = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
PAUSE_IMAGE = "kommerce.local/pause:1"
NODE_NAME = "kommerce-node"
# containerd's socket and the kubelet's root (its pod-resources and plugin sockets) live
# under /run: a unix socket path is limited to 108 bytes, which a test's temporary folder
# or a user's data folder can exceed.
RUN_DIR = Path("/run/kommerce-node")
KUBELET_ROOT = RUN_DIR / "kubelet"
DEBIAN_PACKAGES = {
    "containerd": "containerd", "runc": "runc", "conntrack": "conntrack",
    "iptables": "iptables", "buildah": "buildah", "mmdebstrap": "mmdebstrap",
}
CNI_PLUGINS = Path("/usr/lib/cni")


class NodeUnavailable(RuntimeError):
    """This machine cannot run a real node; the message says what is missing."""


def node_unavailable_reason() -> str | None:
    """None when a real node can run here; otherwise why not, in words a user can act on."""
    if os.geteuid() != 0:
        return "a real node needs root (containers, a bridge and iptables rules)"
    missing = [package for command, package in DEBIAN_PACKAGES.items()
               if shutil.which(command) is None]
    if not (CNI_PLUGINS / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        return f"packages missing: {' '.join(missing)} (scripts/install-deps.sh installs them)"
    if not Path("/sys/fs/cgroup/memory").is_dir() and \
            not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "no cgroup memory controller"
    return None


def node_binaries() -> dict[str, Path]:
    """The kubelet and kube-proxy (from the control plane's Kubernetes module), CoreDNS and
    the Pod sandbox process."""
    binaries = go_binaries("kube", {
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    })
    binaries |= go_binaries("coredns", {"coredns": "kommerce.local/testbed/coredns"})
    binaries |= go_binaries("pause", {"pause": "kommerce.local/testbed/pause"})
    binaries |= go_binaries("metrics-server",
                            {"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"})
    return binaries


def _run(*argv: str | Path, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {result.stderr.strip()}")
    return result.stdout


def _sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


@dataclass
class RealNode:
    """The node's processes and the host state they need. ``start()`` returns once the Node
    is Ready and cluster DNS answers."""

    plane: ControlPlane
    workdir: Path
    images: dict[str, Path] = field(default_factory=dict)
    binaries: dict[str, Path] = field(default_factory=dict)
    kubelet_port: int = field(default_factory=free_port)
    _processes: list[ServerProcess] = field(default_factory=list)

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd.sock"

    def start(self) -> RealNode:
        if reason := node_unavailable_reason():
            raise NodeUnavailable(reason)
        started = time.monotonic()
        with step("real node binaries (kubelet, kube-proxy, CoreDNS, pause, metrics-server)"):
            self.binaries = node_binaries()
        try:
            self._prepare_host()
            self._start_containerd()
            with step("import images into containerd"):
                from kommerce.testbed.image import pause_image_archive

                self.import_image(pause_image_archive(self.binaries["pause"], PAUSE_IMAGE),
                                  PAUSE_IMAGE)
                names_by_archive: dict[Path, list[str]] = {}
                for name, archive in self.images.items():
                    names_by_archive.setdefault(archive, []).append(name)
                for archive, names in names_by_archive.items():
                    self.import_image(archive, names[0])
                    for alias in names[1:]:
                        self.ctr("images", "tag", "--force", names[0], alias)
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_coredns()
            self._start_metrics_server()
            wait_until(self._node_ready, timeout=120, what=f"node {NODE_NAME}", interval=0.5)
        except BaseException:
            self.stop()
            raise
        say(f"real node {NODE_NAME} ready in {time.monotonic() - started:.1f}s")
        return self

    def stop(self) -> None:
        """Stop the node's processes and remove every container, network namespace, mount
        and rule it made, so the next start (or the machine) is clean."""
        kubelet = [p for p in self._processes if p.name == "kubelet"]
        for process in kubelet:
            process.stop()
        self._remove_containers()
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        clean_up_node_leftovers(self.workdir)

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- images --------------------------------------------------------------------------

    def ctr(self, *args: str | Path, timeout: float = 300) -> str:
        return _run("ctr", "--address", self.containerd_socket, "-n", "k8s.io", *args,
                    timeout=timeout)

    def import_image(self, archive: Path, name: str) -> None:
        """Import an OCI archive and name it ``name`` (the reference the manifests use); the
        CRI plugin sees it at once, so Pods using it start without a pull."""
        repository = name.rsplit(":", 1)[0]
        output = self.ctr("images", "import", "--base-name", repository, archive)
        imported = [line.split()[1] for line in output.splitlines()
                    if line.startswith("unpacking ")]
        if name not in imported:
            if not imported:
                raise RuntimeError(f"importing {archive.name} created no image:\n{output}")
            self.ctr("images", "tag", "--force", imported[0], name)

    # -- host ----------------------------------------------------------------------------

    def _prepare_host(self) -> None:
        """Forwarding and bridge netfilter let kube-proxy's rules see Pod traffic."""
        create_bridge()
        _sysctl("net.ipv4.ip_forward", "1")
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if bridge_nf.exists():
            bridge_nf.write_text("1")
        # Pods reaching their own Service come back over the bridge they left by.
        _run("ip", "link", "set", BRIDGE, "promisc", "on")
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-kommerce.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "kommerce",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{
                     "subnet": POD_SUBNET, "gateway": NODE_IP,
                     "rangeStart": "10.244.0.10"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))

    def _spawn(self, name: str, argv: list[str | Path]) -> ServerProcess:
        process = ServerProcess(name, argv, log_path=self.workdir / "logs" / f"{name}.log")
        self._processes.append(process.start())
        return process

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        config = self.workdir / "containerd.toml"
        # restrict_oom_score_adj: the sandbox's bounding set lacks CAP_SYS_RESOURCE, and runc
        # fails to start a container that asks for a lower OOM score than its parent's.
        config.write_text(f"""version = 2
root = "{root}"
state = "{RUN_DIR / 'state'}"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{self.workdir / 'cni'}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
""")
        containerd = self._spawn("containerd", ["containerd", "--config", config])
        wait_until(self.containerd_socket.exists, timeout=60, what="containerd",
                   alive=containerd.exit_problem)
        wait_until(lambda: bool(self.ctr("version")), timeout=30, what="containerd API",
                   alive=containerd.exit_problem)

    def _client_kubeconfig(self, name: str, common_name: str,
                           organization: str | None = None) -> Path:
        assert self.plane.pki is not None
        pair = issue_certificate(self.plane.pki.ca, name, common_name, organization)
        return write_kubeconfig(self.workdir / f"{name}.kubeconfig", self.plane.server,
                                self.plane.pki.ca.cert, user=common_name,
                                client_cert=pair.cert, client_key=pair.key)

    def _start_kubelet(self) -> None:
        assert self.plane.pki is not None
        serving = issue_certificate(self.plane.pki.ca, "kubelet-serving", NODE_NAME,
                                    server=True, ips=(NODE_IP,))
        kubeconfig = self._client_kubeconfig("kubelet", f"system:node:{NODE_NAME}",
                                             "system:nodes")
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 here: kubelet 1.35 refuses it unless told, and there is no systemd.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.pki.ca.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [NODE_IP],
            "clusterDomain": "cluster.local",
            "failSwapOn": False,
            "resolvConf": str(self._pod_resolv_conf()),
            # The test bed's disk is shared with builds; evicting Pods for a full-ish disk
            # would make every test flaky, and image GC would drop images nothing can pull.
            "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "serializeImagePulls": False,
            "maxPods": 60,
            "podLogsDir": str(self.workdir / "pod-logs"),
            "podPidsLimit": -1,
            "syncFrequency": "10s",
            "fileCheckFrequency": "5s",
            "nodeStatusReportFrequency": "10s",
            "localStorageCapacityIsolation": False,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
            "enforceNodeAllocatable": [],
        }))
        kubelet = self._spawn("kubelet", [
            self.binaries["kubelet"],
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={KUBELET_ROOT}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ])
        wait_until(self._node_registered, timeout=90, what="kubelet registration",
                   interval=0.5, alive=kubelet.exit_problem)

    def _pod_resolv_conf(self) -> Path:
        """The host's resolv.conf would send Pods' external lookups to resolvers they cannot
        reach; the kubelet puts the cluster DNS first anyway, so the upstream file is empty
        but for that."""
        path = self.workdir / "resolv.conf"
        path.write_text(f"nameserver {NODE_IP}\n")
        return path

    def _start_kube_proxy(self) -> None:
        kubeconfig = self._client_kubeconfig("kube-proxy", "system:kube-proxy")
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            # IPVS is not built into this kernel; iptables is.
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the host's conntrack table size alone: it is not ours to change.
            "conntrack": {"maxPerCore": 0, "min": 0},
            "iptables": {"masqueradeAll": False, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        }))
        proxy = self._spawn("kube-proxy", [self.binaries["kube-proxy"], f"--config={config}",
                                           "--v=1"])
        time.sleep(0.5)
        if problem := proxy.exit_problem():
            raise RuntimeError(problem)

    def _start_coredns(self) -> None:
        kubeconfig = self._client_kubeconfig("coredns", "system:coredns", "system:masters")
        health, ready = free_port(), free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(f"""cluster.local:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
}}
""")
        coredns = self._spawn("coredns", [self.binaries["coredns"], "-conf", corefile])
        wait_until(lambda: port_open(ready), timeout=60, what="CoreDNS",
                   alive=coredns.exit_problem)

    def _start_metrics_server(self) -> None:
        """metrics-server on the host, registered as ``metrics.k8s.io`` so HPAs get the
        Pods' CPU: it reads each kubelet's resource metrics (over TLS, trusting the
        cluster's CA) and serves them through the apiserver's aggregation layer."""
        assert self.plane.pki is not None
        kubeconfig = self._client_kubeconfig("metrics-server", "system:metrics-server",
                                             "system:masters")
        port = free_port()
        server = self._spawn("metrics-server", [
            self.binaries["metrics-server"],
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={NODE_IP}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'metrics-server-certs'}",
            "--kubelet-use-node-status-port",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={self.plane.pki.ca.cert}",
            # Short, so an HPA test waits seconds for a first value; the resolution must
            # exceed the kubelet request timeout.
            "--metric-resolution=10s",
            "--kubelet-request-timeout=5s",
            "--v=1",
        ])
        wait_until(lambda: port_open(port, host=NODE_IP), timeout=60, what="metrics-server",
                   alive=server.exit_problem)
        self.plane.kubectl("apply", "--server-side", "--field-manager=kommerce-testbed",
                           "-f", "-", input_text=yaml.safe_dump_all(
                               metrics_api_manifests(NODE_IP, port)))
        wait_until(self._metrics_api_available, timeout=60, what="the metrics.k8s.io API",
                   interval=0.5, alive=server.exit_problem)

    def _metrics_api_available(self) -> bool:
        service = self.plane.kubectl_json("get", "apiservice", METRICS_API)
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in service.get("status", {}).get("conditions", []))

    # -- state ---------------------------------------------------------------------------

    def _node(self) -> dict[str, Any] | None:
        result = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def _node_registered(self) -> bool:
        return self._node() is not None

    def _node_ready(self) -> bool:
        node = self._node()
        if node is None:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _remove_containers(self) -> None:
        if not self.containerd_socket.exists():
            return
        try:
            for task in self.ctr("tasks", "ls", "-q").split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            say(f"node clean-up: {error}")
        time.sleep(1)


METRICS_API = "v1beta1.metrics.k8s.io"


def metrics_api_manifests(host: str, port: int) -> list[dict[str, Any]]:
    """The APIService for ``metrics.k8s.io`` and the selector-less Service whose endpoint
    is the metrics-server on the host."""
    meta = {"name": "metrics-server", "namespace": "kube-system",
            "labels": {"app.kubernetes.io/name": "metrics-server"}}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
         "subsets": [{"addresses": [{"ip": host}],
                      "ports": [{"name": "https", "port": port}]}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": METRICS_API},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                  "service": {"name": "metrics-server", "namespace": "kube-system",
                              "port": 443},
                  # Its serving certificate is self-signed in its cert dir; the link is
                  # the host's own bridge address.
                  "insecureSkipTLSVerify": True,
                  "groupPriorityMinimum": 100, "versionPriority": 100}},
    ]


def create_bridge() -> None:
    """The bridge and its gateway address, made before anything binds to :data:`NODE_IP`
    (the apiserver's endpoint, the backing servers) and reused by the CNI bridge plugin."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if _run("ip", "link", "show", BRIDGE, check=False):
        return
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


@dataclass
class NodeCluster:
    """A control plane whose ``kubernetes`` Service Pods can reach, and one real node."""

    workdir: Path
    plane: ControlPlane = field(init=False)
    node: RealNode = field(init=False)
    images: dict[str, Path] = field(default_factory=dict)

    def start(self) -> NodeCluster:
        if reason := node_unavailable_reason():
            raise NodeUnavailable(reason)
        clean_up_node_leftovers()
        create_bridge()
        self.plane = ControlPlane(self.workdir / "kube", fake_nodes=0,
                                  advertise_address=NODE_IP)
        self.plane.start()
        try:
            self.node = RealNode(self.plane, self.workdir / "node", images=self.images)
            self.node.start()
        except BaseException:
            self.plane.stop()
            clean_up_node_leftovers()
            raise
        return self

    def stop(self) -> None:
        self.node.stop()
        self.plane.stop()

    def __enter__(self) -> NodeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def clean_up_node_leftovers(workdir: Path | None = None) -> None:
    """Remove what a node that was not stopped cleanly left behind: the Pods' network
    namespaces and addresses, kube-proxy's rules, the bridge, and mounts in its folders."""
    _kill_pod_processes()
    _kill_shims()
    listing = _run("ip", "-j", "netns", "list", check=False).strip()
    for entry in json.loads(listing) if listing else []:
        if str(entry.get("name", "")).startswith("cni-"):
            _run("ip", "netns", "delete", entry["name"], check=False)
    shutil.rmtree("/var/lib/cni/networks/kommerce", ignore_errors=True)
    if _run("ip", "link", "show", BRIDGE, check=False):
        _run("ip", "link", "delete", BRIDGE, check=False)
    for table in ("nat", "filter", "mangle"):
        rules = _run("iptables-save", "-t", table, check=False)
        if "KUBE-" in rules or "CNI-" in rules:
            kept = [line for line in rules.splitlines()
                    if not ("KUBE-" in line or "CNI-" in line)]
            subprocess.run(["iptables-restore", "-T", table], input="\n".join(kept) + "\n",
                           text=True, capture_output=True)
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    roots = [str(RUN_DIR)] + ([str(workdir)] if workdir else [])
    for mount in sorted((line.split()[1] for line in mounts), reverse=True):
        if any(mount.startswith(root) for root in roots):
            _run("umount", "-l", mount, check=False)
    shutil.rmtree(KUBELET_ROOT, ignore_errors=True)  # unmounted: only this node's files


def _kill_shims() -> None:
    """containerd's shims outlive containerd and keep the containers running; ours are the
    ones started with our socket's address."""
    marker = str(RUN_DIR / "containerd.sock").encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), 9)


def _kill_pod_processes() -> None:
    """Every process the kubelet's cgroups hold: a container outlives a killed shim, so the
    cgroups, not the process tree, say what belongs to the node. Their folders go too."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        root = controller / "kubepods"
        if not root.is_dir():
            continue
        deepest_first = sorted((p for p in root.rglob("*") if p.is_dir()),
                               key=lambda p: len(p.parts), reverse=True)
        folders = [*deepest_first, root]
        for folder in folders:
            try:
                pids = (folder / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
        time.sleep(0.5)
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()
