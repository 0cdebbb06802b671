"""Names, labels and owner references shared by every child the operators create.

Kept in one place so that every kind labels and owns its children the same way: the
garbage collector, ``kubectl get -l`` and the apply layer's field manager all rely on it.
"""

from __future__ import annotations

import re
from typing import Any

API_GROUP = "kommerce.io"
API_VERSION_NAME = "v1alpha1"
API_VERSION = f"{API_GROUP}/{API_VERSION_NAME}"

PART_OF = "kommerce"
MANAGED_BY = "kommerce-operator"
# The server-side-apply field manager; one name so that every reconcile owns the same fields.
FIELD_MANAGER = "kommerce-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
# The blue-green colour of a Pod, set by the BlueGreenRollout operator on its colour's Pods.
LABEL_COLOR = "kommerce.io/color"

# Custom resources name Services and per-colour Deployments after themselves, so their
# names must be DNS-1035 labels with room for the longest suffix the operators append
# ("-shard-map"); 50 + 10 characters stays inside the 63 a label allows.
MAX_RESOURCE_NAME_LENGTH = 50
RESOURCE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_RESOURCE_NAME = re.compile(RESOURCE_NAME_PATTERN)
RESOURCE_NAME_RULE = (
    f"self.metadata.name.size() <= {MAX_RESOURCE_NAME_LENGTH} && "
    f"self.metadata.name.matches('{RESOURCE_NAME_PATTERN}')"
)
RESOURCE_NAME_MESSAGE = (
    f"metadata.name must be at most {MAX_RESOURCE_NAME_LENGTH} characters of lower-case "
    "letters, digits and '-', starting with a letter, because it names the Services and "
    "Deployments the operator creates"
)
DNS_LABEL_MAX = 63


def check_resource_name(name: str) -> str:
    """Raise ValueError with the CRD's own message when ``name`` cannot name children."""
    if len(name) > MAX_RESOURCE_NAME_LENGTH or not _RESOURCE_NAME.match(name):
        raise ValueError(f"{name!r}: {RESOURCE_NAME_MESSAGE}")
    return name


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference to one of our custom resources.

    ``blockOwnerDeletion`` makes foreground deletion wait for the children, and
    ``controller`` lets ``kubectl describe`` and the garbage collector know who is in charge.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def shared_owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A non-controller owner reference, for an object several resources contribute to.

    The object is garbage-collected once every owner is gone, and none of them claims it.
    """
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid}


def selector_labels(app: str, instance: str) -> dict[str, str]:
    """The immutable subset of labels a Deployment selects its Pods by."""
    return {LABEL_NAME: app, LABEL_INSTANCE: instance}


def standard_labels(app: str, instance: str, component: str) -> dict[str, str]:
    """The app.kubernetes.io labels every child carries (see the Kubernetes docs on them)."""
    return {
        **selector_labels(app, instance),
        LABEL_COMPONENT: component,
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def object_meta(name: str, namespace: str, labels: dict[str, str],
                owners: list[dict[str, Any]], annotations: dict[str, str] | None = None,
                ) -> dict[str, Any]:
    """``metadata`` for a child: keys sorted so two renders of the same spec are identical."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(sorted(labels.items())),
        "ownerReferences": owners,
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


def service_host(name: str, namespace: str) -> str:
    """The cluster-local FQDN of a Service; Istio resolves short hosts per namespace, so
    routes always name the full host."""
    return f"{name}.{namespace}.svc.cluster.local"


def label_value(text: str) -> str:
    """``text`` cut to a valid label value (63 characters, alphanumeric at both ends)."""
    cut = text[:DNS_LABEL_MAX]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", re.sub(r"[^-A-Za-z0-9_.]", "-", cut))


def image_version(image: str) -> str:
    """The image's tag as a label value (``kommerce:1.2.0`` -> ``1.2.0``), or ``""``.

    A digest-only reference has no readable version, so no label rather than a hash.
    """
    reference = image.split("@", 1)[0]
    name_part = reference.rsplit("/", 1)[-1]
    if ":" not in name_part:
        return ""
    return label_value(name_part.rsplit(":", 1)[1])
