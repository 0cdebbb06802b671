"""``kommerce operator``: run the Kopf operator that reconciles every Kommerce kind."""

from __future__ import annotations

import asyncio
import importlib
import logging

import typer

HANDLER_MODULES = (
    "operators.runtime",
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
    import kopf

    from operators.runtime import PEERING_NAME, serve_metrics

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not verbose:
        # Kopf logs every handler success per object at INFO; with hundreds of objects that
        # drowns what matters. Our own Events and warnings still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    serve_metrics(metrics_port)
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
