"""``kommerce testbed``: build and start the real servers the tests use, by hand."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

testbed_app = typer.Typer(help="Build, cache and start the test bed's real servers.",
                          no_args_is_help=True)
console = Console(stderr=True)


@testbed_app.command()
def prepare() -> None:
    """Build or download every test-bed server once (cached), and print what each step took."""
    from kommerce.testbed.elasticsearch import elasticsearch_home, es_java
    from kommerce.testbed.image import kommerce_image_archive
    from kommerce.testbed.kafka import kafka_libs
    from kommerce.testbed.kube import control_plane_binaries, istio_crds_file
    from kommerce.testbed.node import node_binaries, node_unavailable_reason
    from kommerce.testbed.stripe_mock import stripe_mock_binary

    steps: dict[str, Callable[[], object]] = {
        "kubernetes control plane + kwok + kubectl": control_plane_binaries,
        "istio CRDs": istio_crds_file,
        "stripe-mock": stripe_mock_binary,
        "kafka jars": kafka_libs,
        "elasticsearch node": lambda: elasticsearch_home(es_java()),
    }
    # The real node and the image it runs: only where a node can run (root, packages).
    if (reason := node_unavailable_reason()) is None:
        steps["real node: kubelet, kube-proxy, CoreDNS, pause, metrics-server"] = node_binaries
        steps["real node: the image, from the Dockerfile"] = kommerce_image_archive
    table = Table("step", "seconds")
    for name, action in steps.items():
        started = time.monotonic()
        action()
        table.add_row(name, f"{time.monotonic() - started:.1f}")
    console.print(table)
    if reason is not None:
        console.print(f"[yellow]no real node here[/yellow]: {reason}; its tests will skip")


@testbed_app.command()
def cluster(
    workdir: Path | None = typer.Option(None, help="Folder for certificates, etcd data and logs."),
) -> None:
    """Start the local Kubernetes control plane and keep it running until Ctrl-C."""
    from kommerce.testbed.kube import ControlPlane

    plane = ControlPlane(workdir or Path(tempfile.mkdtemp(prefix="kommerce-kube-")))
    with plane:
        console.print(f"[green]ready[/green]: export KUBECONFIG={plane.kubeconfig}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")
