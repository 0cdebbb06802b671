"""Fixtures for the control plane's pure tests: samples, goldens and real API schemas.

Nothing here starts a server. The Kubernetes and Istio schemas are the real ones, read
from the Go modules the test bed builds from; where the module cache does not have them
the tests that need them are skipped, never faked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = ROOT / "manifests" / "samples"
OPERATOR_DIR = ROOT / "manifests" / "operator"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN_ENV = "KOMMERCE_UPDATE_GOLDEN"

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.35.4"
ISTIO_MODULE = "istio.io/api"
ISTIO_VERSION = "v1.31.4"

# apiVersion -> the file of Kubernetes' published OpenAPI v3 that describes it.
_OPENAPI_FILES = {
    "v1": "api__v1_openapi.json",
    "apps/v1": "apis__apps__v1_openapi.json",
    "autoscaling/v2": "apis__autoscaling__v2_openapi.json",
    "policy/v1": "apis__policy__v1_openapi.json",
    "rbac.authorization.k8s.io/v1": "apis__rbac.authorization.k8s.io__v1_openapi.json",
    "apiextensions.k8s.io/v1": "apis__apiextensions.k8s.io__v1_openapi.json",
}


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file."""
    with path.open() as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


@pytest.fixture(scope="session")
def sample_documents() -> list[dict[str, Any]]:
    """Every object of the sample shop, in file order (namespace not yet applied)."""
    documents: list[dict[str, Any]] = []
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents.extend(load_yaml_documents(path))
    return documents


def samples_of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The sample objects of one kind, sorted by name."""
    return sorted((d for d in documents if d.get("kind") == kind),
                  key=lambda d: d["metadata"]["name"])


# --- goldens ----------------------------------------------------------------------------


class _GoldenDumper(yaml.SafeDumper):
    """Multi-line strings (the JSON inside ConfigMaps) as ``|`` blocks, so a golden diff
    reads line by line; no anchors, so a shared object would show up in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_GoldenDumper.add_representer(str, _represent_text)


def dump_manifests(documents: list[dict[str, Any]]) -> str:
    """The golden text for a list of manifests: YAML in the renderer's key order."""
    return yaml.dump_all(documents, Dumper=_GoldenDumper, sort_keys=False, width=100)


@pytest.fixture
def golden() -> Callable[[str, list[dict[str, Any]]], None]:
    """Compare manifests with ``golden/<name>.yaml``; ``KOMMERCE_UPDATE_GOLDEN=1`` rewrites."""

    def check(name: str, documents: list[dict[str, Any]]) -> None:
        path = GOLDEN_DIR / f"{name}.yaml"
        text = dump_manifests(documents)
        if os.environ.get(UPDATE_GOLDEN_ENV) == "1":
            GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.exists(), f"no golden {path}; run with {UPDATE_GOLDEN_ENV}=1 to create it"
        assert text == path.read_text(), (
            f"{name} differs from {path}; if the change is intended, rerun with "
            f"{UPDATE_GOLDEN_ENV}=1 and review the diff")

    return check


# --- the real API schemas -----------------------------------------------------------------


def _go_module_dir(module: str, version: str) -> Path | None:
    try:
        from kommerce.testbed.gobuild import go_module_dir
    except ImportError:  # pragma: no cover - the test bed package is part of the repo
        return None
    try:
        return go_module_dir(module, version)
    except (OSError, RuntimeError):
        return None


def _strict(node: Any) -> Any:
    """Refuse unknown fields, as the apiserver's strict field validation does.

    Published schemas leave ``additionalProperties`` open; closing every object that lists
    its properties turns a misspelt field into a failure instead of silent pruning.
    """
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@dataclass
class ApiSchemas:
    """Validators for the kinds our renderers and manifests produce."""

    kubernetes_dir: Path
    istio_crds: Path
    _validators: dict[tuple[str, str], Any]

    def _kubernetes_validator(self, api_version: str, kind: str) -> Any:
        import jsonschema_rs

        document = json.loads((self.kubernetes_dir / _OPENAPI_FILES[api_version]).read_text())
        schemas = document["components"]["schemas"]
        group_version = api_version if "/" in api_version else f"core/{api_version}"
        group, version = group_version.split("/")
        suffix = f".{version}.{kind}"
        names = [name for name in schemas if name.endswith(suffix)
                 and ((group == "core" and ".api.core." in name) or group.split(".")[0] in name)]
        if len(names) != 1:
            raise LookupError(f"no single schema for {api_version} {kind}: {names}")
        root = {"$ref": f"#/components/schemas/{names[0]}",
                "components": {"schemas": _strict(schemas)}}
        return jsonschema_rs.validator_for(root)

    def _crd_validator(self, documents: list[dict[str, Any]], api_version: str,
                       kind: str) -> Any:
        import jsonschema_rs

        group, version = api_version.split("/")
        for crd in documents:
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            if spec["group"] != group or spec["names"]["kind"] != kind:
                continue
            for served in spec["versions"]:
                if served["name"] == version:
                    schema = _strict(served["schema"]["openAPIV3Schema"])
                    # The apiserver handles these three itself; Istio's schemas omit them.
                    schema["properties"] |= {"apiVersion": {"type": "string"},
                                             "kind": {"type": "string"},
                                             "metadata": {"type": "object"}}
                    return jsonschema_rs.validator_for(schema)
        raise LookupError(f"no CRD serves {api_version} {kind}")

    def validator(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._validators:
            if api_version in _OPENAPI_FILES:
                self._validators[key] = self._kubernetes_validator(api_version, kind)
            elif api_version.startswith("networking.istio.io/"):
                self._validators[key] = self._crd_validator(
                    load_yaml_documents(self.istio_crds), api_version, kind)
            else:
                crds = [d for path in sorted((ROOT / "crds").glob("*.yaml"))
                        for d in load_yaml_documents(path)]
                self._validators[key] = self._crd_validator(crds, api_version, kind)
        return self._validators[key]

    def errors(self, manifest: dict[str, Any]) -> list[str]:
        """Every schema violation in ``manifest``, as ``path: message`` lines."""
        validator = self.validator(manifest["apiVersion"], manifest["kind"])
        return [f"{manifest['kind']} {manifest['metadata'].get('name')}: "
                f"{'/'.join(map(str, error.instance_path))}: {error.message}"
                for error in validator.iter_errors(manifest)]


@pytest.fixture(scope="session")
def api_schemas() -> Iterator[ApiSchemas]:
    """Kubernetes' and Istio's published schemas, made strict; skips if not on this machine."""
    pytest.importorskip("jsonschema_rs")
    kubernetes = _go_module_dir(KUBERNETES_MODULE, KUBERNETES_VERSION)
    istio = _go_module_dir(ISTIO_MODULE, ISTIO_VERSION)
    if kubernetes is None or istio is None:
        pytest.skip("Kubernetes/Istio API modules are not in Go's module cache "
                    "(`kommerce testbed prepare` fetches them)")
    yield ApiSchemas(kubernetes / "api" / "openapi-spec" / "v3",
                     istio / "kubernetes" / "customresourcedefinitions.gen.yaml", {})
