"""How the operator process runs: Kopf settings, the API client, metrics and liveness.

Kept apart from the handlers so every kind's handlers share one client, one field manager and
one set of settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from operators.bluegreen.check_urls import (
    ALLOWLIST_ENV,
    AllowedPrefix,
    CheckUrlPolicy,
    parse_allowlist,
)
from operators.kube import Kube

GROUP = "kommerce.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PEERING_NAME = "kommerce"


@cache
def kube() -> Kube:
    """The one API client of this process (in-cluster credentials or ``KUBECONFIG``)."""
    return Kube.from_environment(os.environ.get("KUBECONFIG"))


@cache
def check_url_allowlist() -> tuple[AllowedPrefix, ...]:
    """Addresses a rollout's check ``url`` may name besides its own namespace's Services
    (``KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST``: URL prefixes or host:port, comma-separated).
    Empty by default: whoever may create a rollout does not get to choose where the operator
    sends requests. Read once, and checked at start-up so a typo stops the operator."""
    return parse_allowlist(os.environ.get(ALLOWLIST_ENV, ""))


def check_url_policy(namespace: str) -> CheckUrlPolicy:
    """Where the checks of a rollout in ``namespace`` may send requests: that namespace's
    Services (each read by name when a check names it) and the allowlist."""
    return CheckUrlPolicy(namespace, check_url_allowlist(),
                          lambda service: kube().get("v1", "Service", namespace, service))


BOOKKEEPING = "kopf"  # status.kopf: Kopf's handler progress and diff base (see configure)


class LeanDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """Kopf's diff base (kept in ``status.kopf``), built without copying what it throws away.

    On every event of a resource with create/update handlers, Kopf deep-copies the whole
    object to extract its "essence" (spec, labels, annotations) and then drops status and
    the rest of metadata; with managedFields and conditions that copy was the operator's
    largest CPU cost at a few hundred services. Handing Kopf only the parts it keeps gives
    the same essence for a fraction of the work.
    """

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        lean = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        lean["metadata"] = {key: metadata[key] for key in ("labels", "annotations")
                            if key in metadata}
        # The object's own top-level fields, whatever its kind: more than RawBody names.
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    try:
        allowlist = check_url_allowlist()
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from error
    if allowlist:
        logger.info(f"rollout checks may also ask {len(allowlist)} allowlisted address(es) "
                    f"from {ALLOWLIST_ENV}")
    # Kopf's bookkeeping (handler progress, its "touch" to wake itself, the last handled
    # spec) goes into status.kopf, never into annotations: metadata stays what users wrote,
    # and `kubectl apply` of a copied object cannot carry Kopf's state along.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(name=BOOKKEEPING)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(name=BOOKKEEPING)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Events come from the Kommerce operator with its own reasons (handlers post them, also
    # for what failed); Kopf's log lines are not turned into Events at all.
    settings.posting.reporting_component = "kommerce-operator"
    settings.posting.reporting_instance = os.environ.get("HOSTNAME") or "kommerce-operator"
    settings.posting.event_name_prefix = "kommerce-"
    settings.posting.level = logging.CRITICAL + 1
    settings.execution.max_workers = int(os.environ.get("KOMMERCE_OPERATOR_WORKERS", "16"))
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.peering.name = PEERING_NAME
    settings.peering.clusterwide = True
    settings.peering.mandatory = False


def as_body(obj: Mapping[str, Any]) -> kopf.Body:
    """The object an Event is about, as the ``kopf.Body`` that ``kopf.event`` takes: a body
    Kopf handed over as it is, else one read from the API or a reference built here (apiVersion,
    kind, metadata), wrapped in a view. Kopf reads only those fields of it, so the Event is
    the same either way."""
    if isinstance(obj, kopf.Body):
        return obj
    return kopf.Body(cast(kopf.RawBody, obj))  # JSON from the API server: no static shape


def serve_metrics(port: int) -> None:
    """Expose the process's Prometheus registry (reconcile counters, durations)."""
    start_http_server(port)
