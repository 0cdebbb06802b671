"""``kommerce operator``: run the Kopf operator that reconciles every Kommerce kind.

Run by hand against the cluster of ``kommerce up --cluster`` (its ``KUBECONFIG`` in the
data folder's ``cluster/``), it registers its pid in that data folder, so ``kommerce down``
stops it along with the cluster it would otherwise keep calling.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from pathlib import Path

import typer

# What the process registers: its settings, the indexes several kinds read, each kind.
HANDLER_MODULES = (
    "operators.runtime",
    "operators.indexes",
    "operators.commerceservice.handlers",
    "operators.bluegreen.handlers",
    "operators.circuitbreaker.handlers",
    "operators.shardlayout.handlers",
)


def run_operator(
    namespace: list[str] = typer.Option(
        None, "--namespace", "-n", help="Watch only these namespaces (default: all)."),
    standalone: bool = typer.Option(
        False, help="Skip leader election (peering); for a single local replica."),
    liveness_port: int = typer.Option(8080, help="Port of the /healthz liveness endpoint."),
    metrics_port: int = typer.Option(9090, help="Port of the Prometheus /metrics endpoint."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the operator until interrupted."""
    from operators.runtime import serve_metrics

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not verbose:
        # Kopf logs every handler success per object at INFO; with hundreds of objects that
        # drowns what matters. Our own Events and warnings still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    serve_metrics(metrics_port)
    registered = _register_by_hand(liveness_port)
    try:
        _run(namespace, standalone, liveness_port)
    finally:
        if registered is not None:
            registered.unlink(missing_ok=True)


def _register_by_hand(liveness_port: int) -> Path | None:
    from kommerce.platform.state import (
        PLATFORM_CHILD_ENV,
        data_dir_of_kubeconfig,
        register_by_hand,
    )

    if os.environ.get(PLATFORM_CHILD_ENV):
        return None  # started by `kommerce up`: already in its state file
    data_dir = data_dir_of_kubeconfig(os.environ.get("KUBECONFIG"))
    if data_dir is None:
        return None
    with contextlib.suppress(OSError):
        path = register_by_hand(data_dir, "kommerce-operator (by hand)", liveness_port)
        logging.getLogger(__name__).info(
            f"running against the cluster of {data_dir}: `kommerce down` stops this "
            f"operator too (pid {os.getpid()})")
        return path
    return None


def _run(namespace: list[str] | None, standalone: bool, liveness_port: int) -> None:
    import kopf

    from operators.runtime import PEERING_NAME

    settings = kopf.OperatorSettings()
    # Confined to named namespaces (manifests/operator/namespaced), Kopf would still list and
    # watch every namespace and CRD to match patterns; the names are exact and the CRDs are
    # installed first, so it does not, and its RBAC need not allow it.
    settings.scanning.disabled = bool(namespace)
    asyncio.run(kopf.operator(
        settings=settings,
        clusterwide=not namespace,
        namespaces=namespace or (),
        standalone=standalone,
        peering_name=PEERING_NAME,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
    ))
