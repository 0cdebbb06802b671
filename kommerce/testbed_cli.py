"""``kommerce testbed``: build and start the real servers the tests use, by hand."""

from __future__ import annotations

import tempfile
import time
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
    from kommerce.testbed.kafka import kafka_libs
    from kommerce.testbed.kube import control_plane_binaries, istio_crds_file
    from kommerce.testbed.stripe_mock import stripe_mock_binary

    steps = {
        "kubernetes control plane + kwok + kubectl": control_plane_binaries,
        "istio CRDs": istio_crds_file,
        "stripe-mock": stripe_mock_binary,
        "kafka jars": kafka_libs,
        "elasticsearch node": lambda: elasticsearch_home(es_java()),
    }
    table = Table("step", "seconds")
    for name, action in steps.items():
        started = time.monotonic()
        action()
        table.add_row(name, f"{time.monotonic() - started:.1f}")
    console.print(table)


@testbed_app.command()
def cluster(
    workdir: Path = typer.Option(None, help="Folder for certificates, etcd data and logs."),
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
