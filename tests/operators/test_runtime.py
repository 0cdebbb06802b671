"""The operator's Kopf settings: the lean diff base must see exactly what Kopf's own sees,
or update handlers would fire on the wrong changes (or miss the right ones)."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from operators.runtime import LeanDiffBaseStorage

BODY: dict[str, Any] = {
    "apiVersion": "kommerce.io/v1alpha1",
    "kind": "CommerceService",
    "metadata": {
        "name": "shop", "namespace": "kommerce-shop", "uid": "u-1", "generation": 3,
        "resourceVersion": "42", "labels": {"team": "checkout"},
        "annotations": {"bluegreen.kommerce.io/active-color": "green",
                        "kommerce.io/last-handled-configuration": '{"spec": {}}',
                        "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        "finalizers": ["kommerce.io/finalizer"],
    },
    "spec": {"component": "review", "routes": [{"pathPrefix": "/api/reviews"}]},
    "status": {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]},
}


def _storages() -> tuple[kopf.StatusDiffBaseStorage, LeanDiffBaseStorage]:
    return kopf.StatusDiffBaseStorage(name="kopf"), LeanDiffBaseStorage(name="kopf")


def test_the_lean_diff_base_equals_kopfs_own() -> None:
    kopfs, lean = _storages()
    body = kopf.Body(copy.deepcopy(BODY))
    assert lean.build(body=body) == kopfs.build(body=body)
    assert "status" not in lean.build(body=body)


def test_the_lean_diff_base_without_labels_or_annotations_equals_kopfs_own() -> None:
    kopfs, lean = _storages()
    bare = copy.deepcopy(BODY)
    del bare["metadata"]["labels"], bare["metadata"]["annotations"]
    assert lean.build(body=kopf.Body(bare)) == kopfs.build(body=kopf.Body(bare))


def test_the_lean_diff_base_does_not_share_structure_with_the_body() -> None:
    _, lean = _storages()
    body = copy.deepcopy(BODY)
    essence = lean.build(body=kopf.Body(body))
    body["spec"]["routes"][0]["pathPrefix"] = "/changed"
    assert essence["spec"]["routes"][0]["pathPrefix"] == "/api/reviews"
