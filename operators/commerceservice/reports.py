"""What each CommerceService's status last said about its Deployment, and the newest
Deployment the watch stream has shown.

Two writers put a Deployment's progress into a service's status: the reconcile (right after
it applied the Deployment) and the Deployment's own watch events. Unordered, they can undo
each other: a reconcile that started before the Pods came up writes "0 of 1 available" after
the event handler already wrote Ready, and no further event comes to correct it. So both
write under one lock per service, and both judge the *newest* Deployment the watch stream
delivered (events for one object arrive in order), falling back to the apply's answer only
until the first event arrives. The record of what was written lets the many Deployment events
that change nothing status shows (metadata, observedGeneration, our own no-op applies) skip
the GET of the service and the status patch.

In memory only: after a restart the resume handler reconciles every service anyway.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kommerce.contracts.release import Release
from operators.workloads import DeploymentProgress, RolloutState, deployment_progress

# A rollout in progress passes through several states in a second or two ("0 of 1 Pods run
# the new template", "0 of 1 updated Pods are available", ...). Writing each costs a GET and
# a status patch per service; at a few hundred services that is a large share of the API
# server's work for messages nobody reads before the next. So a transient state is written
# at most this often per service, with a trailing write so the last one always lands; the
# end states (complete, failed) are written at once.
TRANSIENT_HOLD_SECONDS = 2.0
TRANSIENT = frozenset({RolloutState.PENDING, RolloutState.ROLLING})

Key = tuple[str, str, str]  # namespace, owning service, Deployment name


@dataclass(frozen=True)
class ServiceView:
    """What a status write needs to know of the service itself, as of the last status this
    process wrote or read for it. The operator is the only writer of a CommerceService's
    status, so this spares a GET per Deployment event; generation and release follow the
    resource through the reconcile, which runs on every change of either."""

    uid: str
    generation: int
    release: Release | None
    status: dict[str, Any]


def _identity(deployment: Mapping[str, Any]) -> tuple[str, str]:
    metadata = deployment.get("metadata") or {}
    return str(metadata.get("name")), str(metadata.get("uid"))


class DeploymentReports:
    """Thread-safe: Kopf runs sync handlers in a thread pool."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._latest: dict[Key, dict[str, Any]] = {}
        self._written: dict[Key, tuple[str, DeploymentProgress]] = {}
        self._written_at: dict[tuple[str, str], float] = {}
        self._deferred: set[Key] = set()
        self._views: dict[tuple[str, str], ServiceView] = {}
        self._guard = threading.Lock()

    def lock(self, namespace: str, service: str) -> threading.Lock:
        """The lock every status write for this service holds."""
        with self._guard:
            return self._locks.setdefault((namespace, service), threading.Lock())

    def observe(self, namespace: str, service: str, deployment: Mapping[str, Any]) -> None:
        """Record a Deployment as the watch stream delivered it (always the newest)."""
        name, _ = _identity(deployment)
        self._latest[(namespace, service, name)] = dict(deployment)

    def newest(self, namespace: str, service: str,
               applied: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The Deployment to judge: the watch stream's newest copy of the same object, else
        the one the API server just answered with (a Deployment recreated under the same
        name has a new uid, and its first event may not have arrived yet)."""
        if applied is None:
            return None
        name, uid = _identity(applied)
        watched = self._latest.get((namespace, service, name))
        if watched is not None and _identity(watched)[1] == uid:
            return watched
        return dict(applied)

    def unchanged(self, namespace: str, service: str, deployment: Mapping[str, Any]) -> bool:
        """True when status already shows this Deployment's progress."""
        name, uid = _identity(deployment)
        return self._written.get((namespace, service, name)) == (
            uid, deployment_progress(deployment))

    def written(self, namespace: str, service: str, deployment: Mapping[str, Any]) -> None:
        """Status now shows this Deployment's progress (written, or found already there)."""
        name, uid = _identity(deployment)
        self._written[(namespace, service, name)] = (uid, deployment_progress(deployment))
        self._written_at[(namespace, service)] = time.monotonic()

    def defer(self, namespace: str, service: str, deployment: Mapping[str, Any],
              write: Callable[[dict[str, Any]], None]) -> bool:
        """True if this Deployment's state is transient and status was written for the
        service moments ago: then ``write`` runs once the hold is over, with the newest
        copy of the Deployment, and the caller writes nothing now."""
        if deployment_progress(deployment).state not in TRANSIENT:
            return False
        written_at = self._written_at.get((namespace, service))
        if written_at is None or time.monotonic() - written_at >= TRANSIENT_HOLD_SECONDS:
            return False
        name, _ = _identity(deployment)
        key = (namespace, service, name)
        with self._guard:
            if key in self._deferred:
                return True
            self._deferred.add(key)

        def trailing_write() -> None:
            with self._guard:
                self._deferred.discard(key)
            newest = self._latest.get(key)
            if newest is not None:
                write(newest)
        # Kopf hands handlers their event queue through context variables; the trailing
        # write runs in the handler's context so it can post Events as the handler could.
        context = contextvars.copy_context()
        timer = threading.Timer(TRANSIENT_HOLD_SECONDS, context.run, args=(trailing_write,))
        timer.daemon = True
        timer.start()
        return True

    def view(self, namespace: str, service: str, uid: str) -> ServiceView | None:
        """The service as last seen by a status write, if it is the same object."""
        view = self._views.get((namespace, service))
        return view if view is not None and view.uid == uid else None

    def seen(self, namespace: str, service: str, view: ServiceView) -> None:
        self._views[(namespace, service)] = view

    def forget(self, namespace: str, service: str) -> None:
        """The service is gone; drop what was kept for it."""
        with self._guard:
            self._locks.pop((namespace, service), None)
            self._written_at.pop((namespace, service), None)
            self._views.pop((namespace, service), None)
            for store in (self._latest, self._written):
                for key in [k for k in store if k[:2] == (namespace, service)]:
                    store.pop(key, None)
