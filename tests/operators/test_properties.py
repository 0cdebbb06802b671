"""Properties that hold for every valid spec, not just the samples: ownership, labels, name
lengths, HPA bounds, selectors, determinism, and acceptance by the real API schemas."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.commerceservice.render import RoutedService, render, render_route_table
from operators.commerceservice.spec import (
    RESERVED_ENV,
    CommerceServiceSpec,
    Component,
    HttpMethod,
)
from operators.conditions import ConditionStatus, ConditionUpdate, set_conditions
from operators.schema import DNS_LABEL_PATTERN

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow])
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
APP_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance",
              "app.kubernetes.io/component", "app.kubernetes.io/part-of",
              "app.kubernetes.io/managed-by"}

resource_names = st.from_regex(r"[a-z]([-a-z0-9]{0,48}[a-z0-9])?", fullmatch=True)
namespaces = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
object_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True)
images = st.from_regex(r"[a-z][a-z0-9./-]{0,30}(:[A-Za-z0-9_.-]{1,100})?", fullmatch=True)
env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True).filter(
    lambda name: name not in RESERVED_ENV)
prefixes = st.from_regex(r"/[a-z0-9][-a-z0-9/._~]{0,40}", fullmatch=True)
durations = st.integers(1, 120).map(lambda seconds: f"{seconds}s")


def _key_ref(secret_only: bool) -> st.SearchStrategy[dict[str, Any]]:
    ref = st.fixed_dictionaries({"name": object_names},
                                optional={"key": st.sampled_from(["url", "apiKey"]),
                                          "optional": st.booleans()})
    secret = st.builds(lambda r: {"secretKeyRef": r}, ref)
    if secret_only:
        return secret
    return st.one_of(secret, st.builds(lambda r: {"configMapKeyRef": r}, ref))


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    cpu_request = draw(st.integers(1, 4000))
    memory_request = draw(st.integers(16, 4096))
    return {
        "requests": {"cpu": f"{cpu_request}m", "memory": f"{memory_request}Mi"},
        "limits": {"cpu": f"{draw(st.integers(cpu_request, 8000))}m",
                   "memory": f"{draw(st.integers(memory_request, 8192))}Mi"},
    }


@st.composite
def autoscaling(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(1, 1000))
    spec: dict[str, Any] = {"enabled": draw(st.booleans()), "minReplicas": low,
                            "maxReplicas": draw(st.integers(low, 1000)),
                            "targetCPUUtilizationPercentage": draw(st.integers(1, 1000))}
    if draw(st.booleans()):
        spec["targetMemoryUtilizationPercentage"] = draw(st.integers(1, 1000))
    if draw(st.booleans()):
        rules = st.fixed_dictionaries({}, optional={
            "stabilizationWindowSeconds": st.integers(0, 3600),
            "selectPolicy": st.sampled_from(["Max", "Min", "Disabled"]),
            "policies": st.lists(st.fixed_dictionaries({
                "type": st.sampled_from(["Pods", "Percent"]), "value": st.integers(1, 1000),
                "periodSeconds": st.integers(1, 1800)}), max_size=3)})
        spec["behavior"] = draw(st.fixed_dictionaries(
            {}, optional={"scaleUp": rules, "scaleDown": rules}))
    return spec


routes = st.fixed_dictionaries(
    {"pathPrefix": prefixes},
    optional={"methods": st.lists(st.sampled_from([m.value for m in HttpMethod]), min_size=1,
                                  unique=True),
              "authRequired": st.booleans(),
              "rateLimitPerMinute": st.integers(1, 1_000_000)})


@st.composite
def commerce_service_specs(draw: st.DrawFn) -> dict[str, Any]:
    component = draw(st.sampled_from([c.value for c in Component]))
    spec: dict[str, Any] = {
        "component": component,
        "image": draw(images),
        "replicas": draw(st.integers(0, 1000)),
        "port": draw(st.integers(1, 65535)),
        "servicePort": draw(st.integers(1, 65535)),
        "resources": draw(resources()),
        "autoscaling": draw(autoscaling()),
        "disruptionBudget": {"enabled": draw(st.booleans()),
                             "maxUnavailable": draw(st.integers(1, 1000))},
        "env": draw(st.lists(st.fixed_dictionaries({"name": env_names},
                                                   optional={"value": st.text(max_size=30)}),
                             max_size=6, unique_by=lambda e: e["name"])),
        "envFrom": draw(st.lists(st.one_of(
            st.fixed_dictionaries({"secretRef": st.fixed_dictionaries({"name": object_names})}),
            st.fixed_dictionaries({"configMapRef": st.fixed_dictionaries({"name": object_names})},
                                  optional={"prefix": st.sampled_from(["APP_", "X_"])})),
            max_size=3)),
        "connections": draw(st.fixed_dictionaries({}, optional={
            "database": _key_ref(secret_only=True), "redis": _key_ref(secret_only=False),
            "kafka": _key_ref(secret_only=False), "elasticsearch": _key_ref(secret_only=False),
            "stripe": _key_ref(secret_only=True)})),
    }
    if component != "gateway":
        spec["routes"] = draw(st.lists(routes, max_size=16, unique_by=lambda r: r["pathPrefix"]))
    if draw(st.booleans()):
        spec["args"] = draw(st.lists(st.text(max_size=20), max_size=4))
    return spec


@PROPERTY_SETTINGS
@given(name=resource_names, namespace=namespaces, spec=commerce_service_specs(),
       uid=st.uuids().map(str))
def test_any_valid_spec_renders_owned_labelled_children_with_short_names(
        name: str, namespace: str, spec: dict[str, Any], uid: str) -> None:
    children = render(name, namespace, spec, uid)
    for child in children:
        meta = child["metadata"]
        assert len(meta["name"]) <= 63 and re.match(DNS_LABEL_PATTERN, meta["name"])
        assert meta["namespace"] == namespace
        (owner,) = meta["ownerReferences"]
        assert owner["uid"] == uid and owner["controller"] is True
        assert owner["blockOwnerDeletion"] is True and owner["name"] == name
        assert meta["labels"].keys() >= APP_LABELS
        for value in meta["labels"].values():
            assert len(value) <= 63 and LABEL_VALUE.match(value), value


@PROPERTY_SETTINGS
@given(spec=commerce_service_specs())
def test_any_valid_spec_keeps_hpa_bounds_and_selectors_consistent(spec: dict[str, Any]) -> None:
    children = {c["kind"]: c for c in render("svc", "shop", spec, "uid")}
    deployment = children["Deployment"]["spec"]
    selector = deployment["selector"]["matchLabels"]
    assert selector.items() <= deployment["template"]["metadata"]["labels"].items()
    assert children["Service"]["spec"]["selector"] == selector
    hpa = children.get("HorizontalPodAutoscaler")
    assert (hpa is not None) == spec["autoscaling"]["enabled"]
    if hpa is not None:
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployment
    else:
        assert deployment["replicas"] == spec["replicas"]
    http = children["VirtualService"]["spec"]["http"]
    assert len(http) == len(spec.get("routes", [])) + 1
    assert len({route["name"] for route in http}) <= len(http)


@PROPERTY_SETTINGS
@given(spec=commerce_service_specs())
def test_any_valid_spec_renders_identically_twice(spec: dict[str, Any]) -> None:
    first = json.dumps(render("svc", "shop", spec, "uid"))
    second = json.dumps(render("svc", "shop", CommerceServiceSpec.model_validate(spec), "uid"))
    assert first == second


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=commerce_service_specs())
def test_any_valid_spec_renders_children_the_real_api_schemas_accept(
        api_schemas: Any, spec: dict[str, Any]) -> None:
    for child in render("svc", "shop", spec, "3f0c8a4e-0000-4000-8000-000000000000"):
        assert api_schemas.errors(child) == []


@settings(max_examples=25, deadline=None)
@given(services=st.lists(st.tuples(resource_names, commerce_service_specs()), max_size=4,
                         unique_by=lambda pair: pair[0]),
       data=st.data())
def test_route_table_does_not_depend_on_the_order_services_are_listed(
        services: list[tuple[str, dict[str, Any]]], data: st.DataObject) -> None:
    routed = [RoutedService(name, f"uid-{name}", CommerceServiceSpec.model_validate(spec))
              for name, spec in services]
    shuffled = data.draw(st.permutations(routed))
    table = render_route_table("shop", routed)
    assert render_route_table("shop", shuffled) == table
    entries = json.loads(table["data"]["routes.json"])["routes"]
    assert len({entry["pathPrefix"] for entry in entries}) == len(entries)


updates = st.lists(st.builds(
    ConditionUpdate,
    type=st.sampled_from(["Ready", "Progressing", "Degraded"]),
    status=st.sampled_from(list(ConditionStatus)),
    reason=st.from_regex(r"[A-Z][A-Za-z]{0,20}", fullmatch=True),
    message=st.text(max_size=40)), max_size=6)


@PROPERTY_SETTINGS
@given(first=updates, second=updates, gap=st.integers(1, 10_000))
def test_repeating_a_reconcile_never_moves_last_transition_time(
        first: list[ConditionUpdate], second: list[ConditionUpdate], gap: int) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    before = set_conditions(set_conditions(None, first, observed_generation=1, now=start),
                            second, observed_generation=2, now=start)
    again = set_conditions(before, second, observed_generation=2,
                           now=start + timedelta(seconds=gap))
    assert again == before


def _containers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value, *(c for item in value.values() for c in _containers(item))]
    if isinstance(value, list):
        return [value, *(c for item in value for c in _containers(item))]
    return []


@PROPERTY_SETTINGS
@given(spec=commerce_service_specs())
def test_rendered_children_share_no_mutable_objects(spec: dict[str, Any]) -> None:
    # The apply layer may patch one manifest in place; that must never leak into another.
    found = _containers(render("svc", "shop", spec, "uid"))
    assert len({id(container) for container in found}) == len(found)
