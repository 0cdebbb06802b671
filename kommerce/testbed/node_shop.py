"""The sample shop on the real node: its backing servers on the bridge address, the
operator in a Pod from the project's image, and the shop's kustomize overlay applied.

The servers (PostgreSQL, Redis, Kafka, Elasticsearch) are the test bed's host servers,
started on :data:`~kommerce.testbed.node.NODE_IP` so Pods can reach them; the
overlay's Services without selectors get EndpointSlices naming them, the way a shop reaches
managed databases.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kommerce.testbed.cache import REPO_ROOT, say, step
from kommerce.testbed.elasticsearch import SearchEngine
from kommerce.testbed.kafka import KafkaBroker
from kommerce.testbed.node import NODE_IP, NodeCluster
from kommerce.testbed.postgres import SUPERUSER, PostgresServer
from kommerce.testbed.process import ServerProcess
from kommerce.testbed.redis import RedisServer

SHOP_NAMESPACE = "kommerce-shop"
# The reference the node overlay gives every workload; a second name for the same image lets
# a release be staged (a new image reference) without a second build.
SHOP_IMAGE = "kommerce.local/kommerce:0.1.0"
NEXT_SHOP_IMAGE = "kommerce.local/kommerce:0.1.1"
OPERATOR_NAMESPACE = "kommerce-system"
SHOP_OVERLAY = REPO_ROOT / "manifests" / "node" / "shop"
OPERATOR_OVERLAY = REPO_ROOT / "manifests" / "node" / "operator"
# What the sample's Secrets name (manifests/samples/backing-services.yaml).
SHOP_DATABASES = ("kommerce", "kommerce_shard_1", "kommerce_shard_2", "kommerce_shard_3")
SHOP_DB_USER = "kommerce"


@dataclass
class NodeBackends:
    """The shop's backing servers, listening where Pods can reach them."""

    workdir: Path
    postgres: PostgresServer = field(init=False)
    redis: RedisServer = field(init=False)
    kafka: KafkaBroker = field(init=False)
    search: SearchEngine = field(init=False)

    def start(self) -> NodeBackends:
        with step("backing servers on the node's bridge"):
            self.postgres = PostgresServer(self.workdir / "postgres" / "data", host=NODE_IP)
            self.redis = RedisServer(self.workdir / "redis", host=NODE_IP)
            self.kafka = KafkaBroker(self.workdir / "kafka", host=NODE_IP)
            self.search = SearchEngine(self.workdir / "elasticsearch", host=NODE_IP)
            try:
                for server in (self.postgres, self.redis, self.kafka, self.search):
                    server.start()
                self._create_shop_databases()
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        for name in ("search", "kafka", "redis", "postgres"):
            server = getattr(self, name, None)
            if server is not None:
                server.stop()

    def _create_shop_databases(self) -> None:
        # The test bed's superuser is the sample's user (trust authentication: any password).
        assert SUPERUSER == SHOP_DB_USER
        for database in SHOP_DATABASES:
            self.postgres.create_database(database)

    def endpoint_slices(self, namespace: str) -> list[dict[str, Any]]:
        """One EndpointSlice per overlay Service, naming the port its server really has."""
        ports = {"postgres": ("postgres", self.postgres.port),
                 "redis": ("redis", self.redis.port),
                 "kafka": ("kafka", self.kafka.port),
                 "elasticsearch": ("http", self.search.port)}
        return [{
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-host", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by":
                                        "kommerce-testbed"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        } for service, (port_name, port) in ports.items()]


@dataclass
class NodeShop:
    """The sample shop, running on the real node."""

    cluster: NodeCluster
    backends: NodeBackends
    admin_email: str = "admin@kommerce.local"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    def kubectl(self, *args: str, input_text: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.plane.kubectl(*args, input_text=input_text, check=check)

    def json(self, *args: str) -> Any:
        return self.cluster.plane.kubectl_json(*args)

    def install(self, timeout: float = 600) -> NodeShop:
        """CRDs, the operator (in its Pod, under its ServiceAccount), then the shop overlay;
        returns once every CommerceService is Ready."""
        with step("install CRDs and the operator on the real node"):
            self.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                         "--all")
            self.kubectl("apply", "--server-side", "-k", str(OPERATOR_OVERLAY))
            self.wait_for_deployment(OPERATOR_NAMESPACE, "kommerce-operator", timeout=300)
        with step("install the sample shop on the real node"):
            self.cluster.plane.create_namespace(SHOP_NAMESPACE)
            for slice_ in self.backends.endpoint_slices(SHOP_NAMESPACE):
                self.cluster.plane.kubectl_apply_manifest(slice_)
            self.cluster.plane.kubectl_apply_manifest({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "shop-admin", "namespace": SHOP_NAMESPACE},
                "stringData": {"KOMMERCE_BOOTSTRAP_ADMIN_EMAIL": self.admin_email,
                               "KOMMERCE_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password}})
            self.kubectl("apply", "--server-side", "-k", str(SHOP_OVERLAY))
            self.wait_for_shop_ready(timeout)
        return self

    def seed_catalog(self) -> None:
        """The demo catalog, through the product Service with the bootstrap admin's token,
        as ``kommerce up`` seeds it."""
        from kommerce.platform.seed import admin_token, seed_catalog

        async def seed() -> None:
            token = await admin_token(self.service_url("user-service"), self.admin_email,
                                      self.admin_password)
            await seed_catalog(self.service_url("product-service"), token, concurrency=4)

        with step("seed the demo catalog through the product Service"):
            asyncio.run(seed())

    def wait_for_deployment(self, namespace: str, name: str, timeout: float) -> None:
        self.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace,
                     f"--timeout={int(timeout)}s")

    def not_ready(self) -> list[str]:
        """CommerceServices whose Ready condition is not True, with its reason."""
        items = self.json("get", "commerceservices", "-n", SHOP_NAMESPACE)["items"]
        waiting = []
        for item in items:
            conditions = {c["type"]: c for c in item.get("status", {}).get("conditions", [])}
            ready = conditions.get("Ready", {})
            if ready.get("status") != "True":
                waiting.append(f"{item['metadata']['name']}: {ready.get('reason', 'no status')}"
                               f" {ready.get('message', '')}".strip())
        return waiting if items else ["no CommerceServices yet"]

    def wait_for_shop_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            last = self.not_ready()
            if not last:
                say("every CommerceService is Ready")
                return
            time.sleep(3)
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        raise TimeoutError(f"CommerceServices not Ready after {timeout:.0f}s: "
                           f"{'; '.join(last)}\n{pods}")

    def service_ip(self, name: str, namespace: str = SHOP_NAMESPACE) -> str:
        return str(self.json("get", "service", name, "-n", namespace)["spec"]["clusterIP"])

    def service_url(self, name: str, namespace: str = SHOP_NAMESPACE) -> str:
        """The Service's ClusterIP address: the host reaches it through kube-proxy's rules
        as a Pod would."""
        return f"http://{self.service_ip(name, namespace)}"

    def pods(self, selector: str, namespace: str = SHOP_NAMESPACE) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-n", namespace, "-l", selector)["items"])

    def events(self, namespace: str = SHOP_NAMESPACE) -> str:
        return self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                            check=False).stdout


@dataclass
class RunningNodeShop:
    """A real node with the sample shop on it, as :func:`start_node_shop` leaves it."""

    cluster: NodeCluster
    backends: NodeBackends
    shop: NodeShop

    def processes(self) -> list[ServerProcess]:
        """Every host process behind it (control plane, node, backing servers)."""
        found: list[ServerProcess] = [*getattr(self.cluster.plane, "_processes", []),
                                      *self.cluster.node._processes]
        for name in ("postgres", "redis", "kafka", "search"):
            process = getattr(getattr(self.backends, name, None), "_process", None)
            if process is not None:
                found.append(process)
        return found

    def stop(self) -> None:
        # The node first: PostgreSQL waits for its clients (the Pods) before it stops.
        self.cluster.stop()
        self.backends.stop()


def start_node_shop(workdir: Path, *, seed: bool = True) -> RunningNodeShop:
    """The real node, the shop's backing servers on its bridge, the operator and the sample
    shop overlay, every CommerceService Ready (and the demo catalog, with ``seed``): what
    ``kommerce up --cluster`` starts on a machine that can run a node, and what the
    real-node tests run against. Everything started is stopped again if a step fails."""
    from kommerce.testbed.image import kommerce_image_archive

    archive = kommerce_image_archive()
    cluster = NodeCluster(workdir, images={SHOP_IMAGE: archive, NEXT_SHOP_IMAGE: archive})
    cluster.start()
    backends: NodeBackends | None = None
    try:
        backends = NodeBackends(workdir / "backends").start()
        shop = NodeShop(cluster, backends).install()
        if seed:
            shop.seed_catalog()
    except BaseException:
        cluster.stop()
        if backends is not None:
            backends.stop()
        raise
    return RunningNodeShop(cluster, backends, shop)
