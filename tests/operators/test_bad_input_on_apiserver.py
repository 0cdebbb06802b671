"""Bad input the apiserver refuses with one error that names the value, and input it
accepts on purpose. (Each CEL case of ``test_specs.INVALID`` is also checked on the
apiserver by ``test_crds_on_apiserver``; these are the cases about what is *not* said.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from operators.crdgen import RESOURCES

from .conftest import ROOT

pytestmark = pytest.mark.kube

NAMESPACE = "bad-input"


@pytest.fixture(scope="module")
def kube(control_plane: Any) -> Any:
    control_plane.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          *(f"crd/{resource.crd_name}" for resource in RESOURCES))
    control_plane.create_namespace(NAMESPACE)
    return control_plane


def _dry_run(kube: Any, kind: str, spec: dict[str, Any]) -> Any:
    manifest = {"apiVersion": "kommerce.io/v1alpha1", "kind": kind,
                "metadata": {"name": "bad"}, "spec": spec}
    return kube.kubectl("create", "--dry-run=server", "--validate=strict", "-n", NAMESPACE,
                        "-f", "-", input_text=json.dumps(manifest), check=False)


def test_a_bad_replica_count_gets_its_own_error_and_no_preview_replicas_one(kube: Any) -> None:
    result = _dry_run(kube, "BlueGreenRollout", {"serviceRef": {"name": "shop"},
                                                  "blue": {"image": "shop:1"}, "replicas": 0})
    assert result.returncode != 0
    assert "spec.replicas" in result.stderr
    assert "previewReplicas must not exceed replicas" not in result.stderr, result.stderr


def test_a_malformed_quantity_without_limits_gets_no_cel_evaluation_error(kube: Any) -> None:
    result = _dry_run(kube, "CommerceService", {"component": "review", "image": "shop:1",
                                                 "resources": {"requests": {"cpu": "lots"}}})
    assert result.returncode != 0
    assert "spec.resources.requests.cpu" in result.stderr
    for leaked in ("evaluation", "no such overload", "quantity(", "must not exceed"):
        assert leaked not in result.stderr, result.stderr


def test_a_request_above_the_default_limit_names_both_values(kube: Any) -> None:
    # No limits written: the CRD's default limit (500m) applies, and the message says so.
    result = _dry_run(kube, "CommerceService", {"component": "review", "image": "shop:1",
                                                 "resources": {"requests": {"cpu": "1"}}})
    assert result.returncode != 0
    assert "resources.requests.cpu must not exceed resources.limits.cpu: 1 > 500m" in \
        result.stderr


def test_a_malformed_duration_gets_the_pattern_error_alone(kube: Any) -> None:
    result = _dry_run(kube, "CircuitBreakerPolicy", {"targetRef": {"name": "pay"},
                                                      "timeout": "ten seconds"})
    assert result.returncode != 0
    assert "spec.timeout" in result.stderr
    assert "shorter than 1ms" not in result.stderr and "evaluation" not in result.stderr


def test_a_retry_condition_envoy_does_not_know_is_named_in_the_refusal(kube: Any) -> None:
    result = _dry_run(kube, "CircuitBreakerPolicy", {"targetRef": {"name": "pay"},
                                                      "retries": {"retryOn": "5xx,sometimes"}})
    assert result.returncode != 0
    assert "retryOn 5xx,sometimes has a condition Envoy does not know (sometimes)" in \
        result.stderr


def test_a_rollout_with_only_the_active_colour_is_accepted_on_purpose(kube: Any) -> None:
    # Meant: a rollout starts with the colour that serves; the other colour is declared
    # when a release is staged on it (README, "Releasing with a BlueGreenRollout").
    result = _dry_run(kube, "BlueGreenRollout", {"serviceRef": {"name": "shop"},
                                                  "blue": {"image": "shop:1"}})
    assert result.returncode == 0, result.stderr
    refused = _dry_run(kube, "BlueGreenRollout", {"serviceRef": {"name": "shop"},
                                                   "green": {"image": "shop:1"}})
    assert "the active colour needs an image" in refused.stderr
