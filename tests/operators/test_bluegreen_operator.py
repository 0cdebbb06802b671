"""Blue-green rollouts on the real control plane, with the operator as its own ServiceAccount.

kwok makes Pods Ready at once; to make a colour slow on purpose a test puts kwok's
``kwok.x-k8s.io/status: custom`` annotation on that colour's Pod template (kwok then leaves
those Pods Pending) and takes it off the Pods when the colour may become Ready. The
pre-promotion checks go to a real HTTP server on loopback through the checks' ``url``
override, since Services have no real endpoints here; the operator is restarted with that
server on its check-URL allowlist for the test.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kommerce.cli import app
from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess
from kommerce.testbed.ports import wait_until

from .test_bluegreen_checks import Preview, preview  # noqa: F401  (the fixture)

pytestmark = pytest.mark.kube

HOLD = "kwok.x-k8s.io/status"


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"bg-{uuid.uuid4().hex[:8]}")


def _apply(plane: ControlPlane, manifest: dict[str, Any], namespace: str) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(manifest))


def _patch(plane: ControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    plane.kubectl("patch", "bgr", name, "-n", namespace, "--type=merge",
                  "-p", json.dumps({"spec": spec}))


def _get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _status(plane: ControlPlane, name: str, namespace: str) -> dict[str, Any]:
    return (_get(plane, "bgr", name, namespace) or {}).get("status") or {}


def _wait(plane: ControlPlane, name: str, namespace: str,
          check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60) -> None:
    wait_until(lambda: check(_status(plane, name, namespace)), timeout=timeout,
               what=f"rollout {namespace}/{name}: {what}", interval=0.2)


def _traffic(plane: ControlPlane, name: str, namespace: str) -> tuple[str | None, list[int]]:
    """The colour the Service selects and the (blue, green) weights of every route."""
    service = _get(plane, "service", name, namespace) or {}
    routes = ((_get(plane, "virtualservice.networking.istio.io", name, namespace) or {})
              .get("spec") or {}).get("http") or []
    weights = {tuple(d.get("weight") for d in route["route"]) for route in routes}
    assert len(weights) <= 1, f"routes disagree: {weights}"
    selected = (service.get("spec") or {}).get("selector", {}).get("kommerce.io/color")
    return selected, list(next(iter(weights), ()))


ON_BLUE = ("blue", [100, 0])
ON_GREEN = ("green", [0, 100])


def _traffic_moves(plane: ControlPlane, namespace: str,
                   expected: tuple[str, list[int]]) -> None:
    """Traffic as ``expected``. The operator writes the traffic objects before the status
    that reports them (tests/operators/test_bluegreen_flip_order.py), so once the status
    says so this holds at once; waiting keeps the callers independent of that order."""
    wait_until(lambda: _traffic(plane, "shop", namespace) == expected, timeout=15,
               what=f"traffic to be {expected}", interval=0.1)


def _create(plane: ControlPlane, namespace: str, name: str = "shop",
            **rollout: Any) -> None:
    """A CommerceService and its rollout, blue serving ``shop:1``, green idle."""
    _apply(plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
                   "metadata": {"name": name},
                   "spec": {"component": "review", "image": "shop:1", "replicas": 1,
                            "autoscaling": {"enabled": False},
                            "routes": [{"pathPrefix": f"/api/{name}"},
                                       {"pathPrefix": f"/api/{name}/search"}]}}, namespace)
    spec = {"serviceRef": {"name": name}, "blue": {"image": "shop:1"},
            "green": {"image": "shop:1"}, "replicas": 2, "previewReplicas": 0,
            "scaleDownDelaySeconds": 300, "progressDeadlineSeconds": 120, **rollout}
    _apply(plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "BlueGreenRollout",
                   "metadata": {"name": name}, "spec": spec}, namespace)
    _wait(plane, name, namespace, lambda s: s.get("phase") == "Healthy"
          and s.get("activeColor") == "blue", "blue takes the traffic over")
    wait_until(lambda: _traffic(plane, name, namespace) == ON_BLUE, timeout=10,
               what="Service and routes on blue", interval=0.2)


def _hold(plane: ControlPlane, namespace: str, deployment: str) -> None:
    """New Pods of ``deployment`` stay Pending until :func:`_let_go`."""
    plane.kubectl("patch", "deployment", deployment, "-n", namespace, "--type=merge", "-p",
                  json.dumps({"spec": {"template": {"metadata": {"annotations": {
                      HOLD: "custom"}}}}}))


def _pods(plane: ControlPlane, namespace: str, name: str, color: str) -> list[dict[str, Any]]:
    return plane.kubectl_json("get", "pods", "-n", namespace, "-l",
                              f"app.kubernetes.io/instance={name},kommerce.io/color={color}"
                              )["items"]


def _let_go(plane: ControlPlane, namespace: str, name: str, color: str) -> None:
    """Hand the held Pods back to kwok, which makes them Ready."""
    for pod in _pods(plane, namespace, name, color):
        if HOLD in (pod["metadata"].get("annotations") or {}):
            plane.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace,
                          f"{HOLD}-")


def _events(plane: ControlPlane, namespace: str, name: str) -> list[tuple[str, str]]:
    items = plane.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                               f"involvedObject.kind=BlueGreenRollout,involvedObject.name={name}"
                               )["items"]
    return [(event["type"], event["reason"]) for event in items]


def _cli(plane: ControlPlane, *args: str) -> Any:
    result = CliRunner().invoke(app, ["rollout", *args],
                                env={"KUBECONFIG": str(plane.kubeconfig)})
    assert result.exit_code == 0, result.output
    return result


def _stays(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(0.2)
    return True


# -- waiting for Available ------------------------------------------------------------------


def test_flip_waits_until_green_is_available(control_plane: ControlPlane,
                                            namespace: str) -> None:
    _create(control_plane, namespace)
    wait_until(lambda: _routed_colors(control_plane, namespace) == {"blue"}, timeout=30,
               what="the gateway's route table names blue", interval=0.2)
    _hold(control_plane, namespace, "shop-green")
    _patch(control_plane, namespace, "shop", {"green": {"image": "shop:2"},
                                              "activeColor": "green"})
    _wait(control_plane, "shop", namespace, lambda s: s.get("reason") == "WaitingForAvailable"
          and "shop:2" in s.get("message", ""), "waiting for green")
    assert _stays(lambda: _traffic(control_plane, "shop", namespace) == ON_BLUE, 3)
    status = _status(control_plane, "shop", namespace)
    assert status["phase"] == "Progressing" and status["activeColor"] == "blue"
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True" and "green (shop:2)" in progressing["message"]

    _let_go(control_plane, namespace, "shop", "green")
    _wait(control_plane, "shop", namespace, lambda s: s.get("activeColor") == "green"
          and s.get("phase") == "Healthy", "green takes the traffic")
    _traffic_moves(control_plane, namespace, ON_GREEN)
    status = _status(control_plane, "shop", namespace)
    assert status["history"][0] | {"time": None} == {
        "time": None, "fromColor": "blue", "toColor": "green", "fromImage": "shop:1",
        "toImage": "shop:2", "reason": "Promote"}
    assert status["stableColor"] == "blue" and status["scaleDownAt"]
    assert {("Normal", "WaitingForAvailable"), ("Normal", "Promoted")} <= \
        set(_events(control_plane, namespace, "shop"))
    # The CommerceService learns of the flip on its own reconcile, a moment later.
    wait_until(lambda: "green is active" in _released(control_plane, namespace, "shop"),
               timeout=30, what="the CommerceService's Released condition names green",
               interval=0.2)
    wait_until(lambda: _routed_colors(control_plane, namespace) == {"green"}, timeout=30,
               what="the gateway's route table names green", interval=0.2)


def _routed_colors(plane: ControlPlane, namespace: str) -> set[str | None]:
    """The colours the gateway's route table says the shop's routes go to."""
    table = _get(plane, "configmap", "kommerce-gateway-routes", namespace) or {}
    routes = json.loads(table.get("data", {}).get("routes.json", '{"routes": []}'))["routes"]
    return {route.get("activeColor") for route in routes if route["service"] == "shop"}


def _released(plane: ControlPlane, namespace: str, name: str) -> str:
    service = _get(plane, "commerceservice", name, namespace) or {}
    conditions = (service.get("status") or {}).get("conditions") or []
    return next((c["message"] for c in conditions if c["type"] == "Released"), "")


def test_past_the_progress_deadline_the_rollout_is_degraded_and_traffic_untouched(
        control_plane: ControlPlane, namespace: str) -> None:
    _create(control_plane, namespace, progressDeadlineSeconds=10)
    _hold(control_plane, namespace, "shop-green")
    _patch(control_plane, namespace, "shop", {"green": {"image": "shop:2"},
                                              "activeColor": "green"})
    _wait(control_plane, "shop", namespace, lambda s: s.get("phase") == "Degraded",
          "Degraded after the deadline", timeout=40)
    status = _status(control_plane, "shop", namespace)
    assert status["reason"] == "ProgressDeadlineExceeded"
    assert "not Available after 10s" in status["message"]
    assert _traffic(control_plane, "shop", namespace) == ON_BLUE
    assert ("Warning", "ProgressDeadlineExceeded") in _events(control_plane, namespace, "shop")


# -- traffic never goes nowhere ---------------------------------------------------------------


class EndpointWatch:
    """Samples the ready endpoints behind a Service as fast as the API answers."""

    def __init__(self, plane: ControlPlane, namespace: str, service: str) -> None:
        from kubernetes import client

        self.api = client.DiscoveryV1Api(plane.api_client())
        self.namespace, self.service = namespace, service
        self.samples: list[set[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def ready_pods(self) -> set[str]:
        slices = self.api.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={self.service}").items
        return {endpoint.target_ref.name for piece in slices for endpoint in piece.endpoints or []
                if endpoint.conditions and endpoint.conditions.ready and endpoint.target_ref}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.ready_pods())
            time.sleep(0.02)

    def __enter__(self) -> EndpointWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_flip_never_leaves_the_active_service_without_ready_endpoints(
        control_plane: ControlPlane, namespace: str) -> None:
    _create(control_plane, namespace, scaleDownDelaySeconds=0)
    wait_until(lambda: len(EndpointWatch(control_plane, namespace, "shop").ready_pods()) == 2,
               timeout=30, what="two blue endpoints", interval=0.2)
    _hold(control_plane, namespace, "shop-green")
    with EndpointWatch(control_plane, namespace, "shop") as watch:
        _patch(control_plane, namespace, "shop", {"green": {"image": "shop:2"},
                                                  "activeColor": "green"})
        _wait(control_plane, "shop", namespace,
              lambda s: s.get("reason") == "WaitingForAvailable", "waiting for green")
        time.sleep(1)
        _let_go(control_plane, namespace, "shop", "green")
        _wait(control_plane, "shop", namespace, lambda s: s.get("activeColor") == "green",
              "green takes the traffic")
        green = {pod["metadata"]["name"] for pod in _pods(control_plane, namespace, "shop",
                                                          "green")}
        wait_until(lambda: watch.samples and watch.samples[-1] == green, timeout=30,
                   what="endpoints are green's Pods", interval=0.1)
        # Back again: blue (scaled to 0 without a delay) must come up before traffic moves.
        _patch(control_plane, namespace, "shop", {"activeColor": "blue"})
        _wait(control_plane, "shop", namespace, lambda s: s.get("activeColor") == "blue"
              and s.get("phase") == "Healthy", "blue takes the traffic back", timeout=60)
        blue = {pod["metadata"]["name"] for pod in _pods(control_plane, namespace, "shop",
                                                         "blue")}
        wait_until(lambda: watch.samples[-1] == blue, timeout=30,
                   what="endpoints are blue's Pods", interval=0.1)
    assert len(watch.samples) > 20
    assert all(watch.samples), "the active Service had no ready endpoint at some moment"


# -- pre-promotion checks -----------------------------------------------------------------------


@pytest.fixture
def allowed_preview(preview: Preview,  # noqa: F811
                    kommerce_operator: OperatorProcess) -> Iterator[Preview]:
    """The stand-in preview, on the operator's check-URL allowlist (it is on loopback, which
    a rollout's checks may not ask otherwise)."""
    with kommerce_operator.allowing_check_urls(preview.url.removeprefix("http://")):
        yield preview


def test_a_failing_pre_promotion_check_blocks_the_flip(
        control_plane: ControlPlane, namespace: str, allowed_preview: Preview) -> None:
    preview = allowed_preview  # noqa: F811  (the allowlisted one from here on)
    checks = {"http": [{"url": f"{preview.url}/ready", "attempts": 2, "timeoutSeconds": 2}],
              "errorRate": {"url": f"{preview.url}/metrics", "maxErrorPercent": 1,
                            "sampleSeconds": 0}}
    _create(control_plane, namespace, prePromotionChecks=checks)
    preview.status = 503
    _patch(control_plane, namespace, "shop", {"green": {"image": "shop:2"},
                                              "activeColor": "green"})
    _wait(control_plane, "shop", namespace, lambda s: s.get("phase") == "Degraded",
          "refused by the HTTP check")
    status = _status(control_plane, "shop", namespace)
    assert status["reason"] == "PrePromotionCheckFailed"
    assert f"GET {preview.url}/ready answered 503" in status["message"]
    assert status["promotion"]["checks"] == "Failed"
    assert _traffic(control_plane, "shop", namespace) == ON_BLUE
    assert ("Warning", "PrePromotionCheckFailed") in _events(control_plane, namespace, "shop")
    hits = preview.hits
    assert _stays(lambda: _status(control_plane, "shop", namespace).get("phase") == "Degraded",
                  2)
    assert preview.hits == hits, "a failed attempt is not retried by itself"

    preview.status = 200  # healthy now, but 5 % of its requests failed
    _cli(control_plane, "promote", "shop", "-n", namespace)
    _wait(control_plane, "shop", namespace,
          lambda s: "error rate 5.00% of 100 requests" in s.get("message", ""),
          "refused by the error-rate check")
    assert _traffic(control_plane, "shop", namespace) == ON_BLUE

    preview.metrics = preview.metrics.replace(" 4.0", " 0.0").replace(" 1.0", " 0.0")
    result = CliRunner().invoke(app, ["rollout", "promote", "shop", "-n", namespace, "--wait",
                                      "--timeout", "60"],
                                env={"KUBECONFIG": str(control_plane.kubeconfig)})
    assert result.exit_code == 0, result.output
    assert "traffic on green" in result.output
    assert _traffic(control_plane, "shop", namespace) == ON_GREEN


# -- abort, restart, deletion ---------------------------------------------------------------------


def test_abort_within_the_delay_restores_traffic_at_once(control_plane: ControlPlane,
                                                        namespace: str) -> None:
    _create(control_plane, namespace)
    blue_before = {pod["metadata"]["uid"] for pod in _pods(control_plane, namespace, "shop",
                                                           "blue")}
    _patch(control_plane, namespace, "shop", {"green": {"image": "shop:2"},
                                              "activeColor": "green"})
    _wait(control_plane, "shop", namespace, lambda s: s.get("activeColor") == "green",
          "green takes the traffic")
    _traffic_moves(control_plane, namespace, ON_GREEN)

    output = _cli(control_plane, "abort", "shop", "-n", namespace, "--wait").output
    assert "aborted: traffic returns to blue" in output
    assert _traffic(control_plane, "shop", namespace) == ON_BLUE
    status = _status(control_plane, "shop", namespace)
    assert status["phase"] == "Aborted" and status["activeColor"] == "blue"
    assert [record["reason"] for record in status["history"]] == ["Abort", "Promote"]
    # The same Pods took the traffic back: nothing had to start.
    assert {pod["metadata"]["uid"] for pod in _pods(control_plane, namespace, "shop", "blue")} \
        == blue_before
    assert ("Warning", "RolledBack") in _events(control_plane, namespace, "shop")

    history = _cli(control_plane, "history", "shop", "-n", namespace).output
    assert "green (shop:2)" in history and "Abort" in history and "Promote" in history
    shown = _cli(control_plane, "status", "shop", "-n", namespace).output
    assert "Aborted" in shown and "blue" in shown and "shop-green" not in shown


def test_operator_restart_mid_flip_converges(control_plane: ControlPlane,
                                             kommerce_operator: OperatorProcess,
                                             namespace: str) -> None:
    _create(control_plane, namespace, scaleDownDelaySeconds=8)
    _hold(control_plane, namespace, "shop-green")
    _patch(control_plane, namespace, "shop", {"green": {"image": "shop:2"},
                                              "activeColor": "green"})
    _wait(control_plane, "shop", namespace,
          lambda s: s.get("reason") == "WaitingForAvailable", "waiting for green")
    started = _status(control_plane, "shop", namespace)["promotion"]["startedAt"]

    kommerce_operator.stop()
    try:
        _let_go(control_plane, namespace, "shop", "green")
        wait_until(lambda: (_get(control_plane, "deployment", "shop-green", namespace) or {})
                   .get("status", {}).get("availableReplicas") == 2, timeout=30,
                   what="green Available while the operator is down", interval=0.2)
        assert _traffic(control_plane, "shop", namespace) == ON_BLUE
    finally:
        kommerce_operator.start()
    _wait(control_plane, "shop", namespace, lambda s: s.get("activeColor") == "green"
          and s.get("phase") == "Healthy", "the flip completes after the restart")
    _traffic_moves(control_plane, namespace, ON_GREEN)
    status = _status(control_plane, "shop", namespace)
    assert len(status["history"]) == 1
    assert status["history"][0]["time"] >= started

    # Restarted again inside the scale-down window: blue still goes at the recorded time.
    kommerce_operator.restart()
    wait_until(lambda: (_get(control_plane, "deployment", "shop-blue", namespace) or {})
               .get("spec", {}).get("replicas") == 0, timeout=40,
               what="blue scaled down after scaleDownDelaySeconds", interval=0.3)
    assert _status(control_plane, "shop", namespace)["stableColor"] == "green"


def test_deleting_the_rollout_hands_traffic_back_to_the_service(control_plane: ControlPlane,
                                                               namespace: str) -> None:
    _create(control_plane, namespace)
    wait_until(lambda: (_get(control_plane, "deployment", "shop", namespace) or {})
               .get("spec", {}).get("replicas") == 0, timeout=30,
               what="the CommerceService's own Deployment handed over", interval=0.2)
    control_plane.kubectl("delete", "bgr", "shop", "-n", namespace, "--wait=true",
                          "--timeout=60s")

    def handed_back() -> bool:
        own = _get(control_plane, "deployment", "shop", namespace) or {}
        return (own.get("status", {}).get("availableReplicas") == 1
                and _get(control_plane, "deployment", "shop-blue", namespace) is None
                and _traffic(control_plane, "shop", namespace)[0] is None
                and _released(control_plane, namespace, "shop") == "")
    wait_until(handed_back, timeout=60, what="the CommerceService carries its traffic again",
               interval=0.3)
    service = _get(control_plane, "commerceservice", "shop", namespace) or {}
    assert "bluegreen.kommerce.io/rollout" not in service["metadata"].get("annotations", {})
    routes = (_get(control_plane, "virtualservice.networking.istio.io", "shop", namespace)
              or {})["spec"]["http"]
    assert all("subset" not in route["route"][0]["destination"] for route in routes)


@pytest.fixture(autouse=True)
def _no_forbidden_calls(kommerce_operator: OperatorProcess) -> Iterator[None]:
    """Whatever a test did, the operator never hit a permission it lacks."""
    yield
    assert "Forbidden" not in kommerce_operator.log()
