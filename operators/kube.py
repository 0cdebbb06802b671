"""The one place that talks to the API server: server-side apply, get, delete, status.

Every write the operator makes goes through :func:`apply` with one field manager, so the API
server itself tracks which fields Kommerce owns, a hand edit of an owned field is put back on
the next apply, and fields set by others (an HPA's replica count, a user's annotation) are
left alone. Applying an unchanged manifest is a no-op on the server: nothing is written to
etcd and no ``resourceVersion`` moves, which is what makes a reconcile idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

from operators.meta import FIELD_MANAGER
from operators.metrics import API_REQUESTS

Manifest = dict[str, Any]
# A JSON patch (RFC 6902): named here because inside ``Kube`` the name ``list`` is its method.
PatchOperations = list[dict[str, Any]]
POOL_SIZE = 32

# Kinds the operator reads or writes, and their REST plurals. A fixed table instead of
# discovery: discovery costs a round of requests at start and the set of kinds is known.
PLURALS: dict[str, str] = {
    "ServiceAccount": "serviceaccounts",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Endpoints": "endpoints",
    "EndpointSlice": "endpointslices",
    "CommerceService": "commerceservices",
    "BlueGreenRollout": "bluegreenrollouts",
    "CircuitBreakerPolicy": "circuitbreakerpolicies",
    "ShardLayout": "shardlayouts",
}


class KubeError(RuntimeError):
    """An API call failed for a reason other than 'not found'; carries the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(PLURALS[kind])
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Kube:
    """A thin, synchronous wrapper over the official client's ``ApiClient``.

    Synchronous because the official client is; Kopf runs sync handlers in its thread pool.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster credentials when running in a Pod, otherwise the kubeconfig."""
        configuration = client.Configuration()
        try:
            if kubeconfig is not None:
                raise config.ConfigException("a kubeconfig was given")
            config.load_incluster_config(  # type: ignore[no-untyped-call]  # untyped in kubernetes
                client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped in kubernetes
                config_file=kubeconfig, client_configuration=configuration)
        # One connection per handler thread, so parallel reconciles never queue on the pool.
        configuration.connection_pool_maxsize = POOL_SIZE
        return cls(client.ApiClient(configuration))

    def _call(self, verb: str, path: str, *, body: Any = None, query: list[tuple[str, str]]
              | None = None, content_type: str = "application/json") -> Manifest | None:
        API_REQUESTS.labels(verb).inc()
        method, url, headers, serialized_body, _ = self.api.param_serialize(
            verb, path, query_params=query or [], body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=serialized_body,
                                     _request_timeout=30)
        raw: bytes = response.read()  # type: ignore[no-untyped-call]  # untyped in kubernetes
        if response.status == 404 and verb in ("GET", "DELETE"):
            return None
        if response.status >= 400:
            raise KubeError(response.status, _server_message(raw, response.reason))
        return json.loads(raw) if raw else {}

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply, forcing ownership of the fields in ``manifest``."""
        metadata = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"],
                             metadata.get("namespace"), metadata["name"])
        result = self._call("PATCH", path, body=manifest,
                            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                            content_type="application/apply-patch+yaml")
        assert result is not None
        return result

    def get(self, api_version: str, kind: str, namespace: str | None,
            name: str) -> Manifest | None:
        return self._call("GET", resource_path(api_version, kind, namespace, name))

    def list(self, api_version: str, kind: str, namespace: str | None,
             label_selector: str | None = None) -> list[Manifest]:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self._call("GET", resource_path(api_version, kind, namespace), query=query)
        items: list[Manifest] = (result or {}).get("items", [])
        return items

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1",
                "propagationPolicy": "Background"}
        return self._call("DELETE", resource_path(api_version, kind, namespace, name),
                          body=body) is not None

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str,
              body: dict[str, Any]) -> Manifest | None:
        """Merge-patch an object (None values delete keys); None when it does not exist.

        For the few writes that are not a rendered child: an annotation that hands a
        CommerceService's traffic to its rollout, a release manager's ``activeColor``."""
        path = resource_path(api_version, kind, namespace, name)
        try:
            return self._call("PATCH", path, body=body,
                              content_type="application/merge-patch+json")
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def patch_json(self, api_version: str, kind: str, namespace: str | None, name: str,
                   operations: PatchOperations) -> Manifest:
        """A JSON patch (RFC 6902) under the operator's field manager: for the one repair
        server-side apply cannot make, replacing a list a hand edit reshaped."""
        path = resource_path(api_version, kind, namespace, name)
        result = self._call("PATCH", path, body=operations,
                            query=[("fieldManager", FIELD_MANAGER)],
                            content_type="application/json-patch+json")
        assert result is not None
        return result

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                     status: dict[str, Any]) -> Manifest:
        """Merge-patch the status subresource (never the spec)."""
        path = resource_path(api_version, kind, namespace, name, "status")
        result = self._call("PATCH", path, body={"status": status},
                            content_type="application/merge-patch+json")
        assert result is not None
        return result


def _server_message(raw: bytes, reason: str | None) -> str:
    try:
        return str(json.loads(raw or b"{}").get("message") or reason)
    except (TypeError, ValueError):
        return str(reason)


_APPLY_POOL = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="apply")


def apply_all(manifests: list[Manifest],
              apply: Callable[[Manifest], Manifest] | None = None) -> list[Manifest]:
    """Apply a resource's children (with ``apply``, by default a plain server-side apply):
    the first (its ServiceAccount, which Pods need to exist before they can be created) on
    its own, the rest at once. Each apply is an independent round trip, so a reconcile
    takes about two round trips instead of one per child."""
    from operators.runtime import kube

    if not manifests:
        return []
    apply = apply or kube().apply
    first = apply(manifests[0])
    return [first, *_APPLY_POOL.map(apply, manifests[1:])]
