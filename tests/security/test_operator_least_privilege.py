"""The operator as an attacker would use it: what its ServiceAccount may do with Secrets, and
where a BlueGreenRollout's pre-promotion checks can make it send requests.

On the real control plane, with the operator running as its own ServiceAccount (bound
token, the RBAC of ``manifests/operator``). A Secret is read by name when a resource names
it, so the account needs ``get`` and nothing that enumerates or streams Secrets. A check URL
that is not a Service of the rollout's namespace is refused before anything is sent, unless
the operator's allowlist names it; what is reported back is a status or an error's name,
never a body. The "outside" address is a real HTTP server on loopback that records every
request that reaches it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kommerce.cli import app
from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OperatorProcess
from kommerce.testbed.ports import wait_until

pytestmark = pytest.mark.kube

SECRET_IN_BODY = "internal-token-7f3a9c"
METRICS = ('http_requests_total{status_code="200"} 100.0\n'
           'http_requests_total{status_code="500"} 0.0\n')


@dataclass
class Listener:
    """A server somewhere the operator should not be made to call."""

    metrics: str = f"{SECRET_IN_BODY} is not Prometheus text\n"
    paths: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    state = Listener()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name
            state.paths.append(self.path)
            body = state.metrics if self.path == "/metrics" else "ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"lp-{uuid.uuid4().hex[:8]}")


def _apply(plane: ControlPlane, manifest: dict[str, Any], namespace: str) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(manifest))


def _get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def _warnings(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items = plane.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                               f"involvedObject.kind=BlueGreenRollout,involvedObject.name={name}"
                               )["items"]
    return [event for event in items if event["type"] == "Warning"]


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "metadata": {"name": name},
            "spec": {"component": "review", "image": "shop:1", "replicas": 1,
                     "autoscaling": {"enabled": False},
                     "routes": [{"pathPrefix": f"/api/{name}"}], **spec}}


# -- Secrets ----------------------------------------------------------------------------------


def test_the_operator_may_get_a_secret_by_name_but_never_list_or_watch_secrets(
        control_plane: ControlPlane, kommerce_operator: OperatorProcess,
        namespace: str) -> None:
    control_plane.kubectl("create", "secret", "generic", "payments-db", "-n", namespace,
                          "--from-literal=url=postgresql://db/payments")
    as_operator = control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE,
                                                           OPERATOR_SERVICE_ACCOUNT)

    def can(*args: str) -> bool:
        result = control_plane.kubectl("auth", "can-i", *args, kubeconfig=as_operator,
                                       check=False)
        return result.stdout.strip() == "yes"

    assert can("get", "secrets", "-n", namespace)
    for verb in ("list", "watch"):
        assert not can(verb, "secrets", "--all-namespaces"), verb
        assert not can(verb, "secrets", "-n", namespace), verb
    listed = control_plane.kubectl("get", "secrets", "-A", kubeconfig=as_operator, check=False)
    assert listed.returncode != 0 and "forbidden" in listed.stderr.lower()
    assert "payments-db" not in listed.stdout
    got = control_plane.kubectl("get", "secret", "payments-db", "-n", namespace, "-o", "name",
                                kubeconfig=as_operator)
    assert got.stdout.strip() == "secret/payments-db"


def test_a_commerce_service_naming_a_secret_is_reconciled_with_get_alone(
        control_plane: ControlPlane, kommerce_operator: OperatorProcess,
        namespace: str) -> None:
    _apply(control_plane, _service("needs-db", connections={
        "database": {"secretKeyRef": {"name": "review-db", "key": "url"}}}), namespace)

    def degraded() -> dict[str, Any]:
        return _condition(_get(control_plane, "commerceservice", "needs-db", namespace),
                          "Degraded")

    wait_until(lambda: degraded().get("reason") == "SecretNotFound", timeout=60,
               what="Degraded: the Secret is missing", interval=0.3)
    control_plane.kubectl("create", "secret", "generic", "review-db", "-n", namespace,
                          "--from-literal=url=postgresql://db/review")
    # The re-check is a timer doing a get by name: no watch on Secrets to wake it.
    wait_until(lambda: _condition(_get(control_plane, "commerceservice", "needs-db",
                                       namespace), "Ready").get("status") == "True",
               timeout=90, what="Ready once the Secret exists", interval=0.3)
    assert "forbidden" not in kommerce_operator.log().lower()


# -- check URLs -----------------------------------------------------------------------------


def _rollout(plane: ControlPlane, namespace: str, listener: Listener) -> None:
    """CommerceService ``shop`` and its rollout, blue serving, with checks aimed at
    ``listener``; taking traffic over runs no checks."""
    _apply(plane, _service("shop"), namespace)
    checks = {"http": [{"url": f"http://{listener.address}/ready", "attempts": 1,
                        "timeoutSeconds": 2}],
              "errorRate": {"url": f"http://{listener.address}/metrics", "sampleSeconds": 0}}
    _apply(plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "BlueGreenRollout",
                   "metadata": {"name": "shop"},
                   "spec": {"serviceRef": {"name": "shop"}, "blue": {"image": "shop:1"},
                            "replicas": 1, "scaleDownDelaySeconds": 300,
                            "prePromotionChecks": checks}}, namespace)
    wait_until(lambda: (_get(plane, "bgr", "shop", namespace).get("status") or {})
               .get("phase") == "Healthy", timeout=90, what="blue takes the traffic over",
               interval=0.3)


def _status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    return _get(plane, "bgr", "shop", namespace).get("status") or {}


def _promote(plane: ControlPlane, namespace: str, *wait: str) -> str:
    result = CliRunner().invoke(app, ["rollout", "promote", "shop", "-n", namespace, *wait],
                                env={"KUBECONFIG": str(plane.kubeconfig)})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_check_url_outside_the_namespace_is_refused_unsent_until_the_allowlist_names_it(
        control_plane: ControlPlane, kommerce_operator: OperatorProcess, namespace: str,
        listener: Listener) -> None:
    _rollout(control_plane, namespace, listener)
    control_plane.kubectl("patch", "bgr", "shop", "-n", namespace, "--type=merge", "-p",
                          json.dumps({"spec": {"green": {"image": "shop:2"},
                                               "activeColor": "green"}}))
    wait_until(lambda: _status(control_plane, namespace).get("phase") == "Degraded",
               timeout=90, what="the promotion refused", interval=0.3)
    status = _status(control_plane, namespace)
    rollout = _get(control_plane, "bgr", "shop", namespace)
    assert status["reason"] == "CheckUrlRefused", status
    assert _condition(rollout, "Degraded")["reason"] == "CheckUrlRefused"
    assert f"check URL http://{listener.address}/ready refused" in status["message"]
    assert "no request was sent" in status["message"]
    assert status["activeColor"] == "blue"
    assert "CheckUrlRefused" in {e["reason"] for e in _warnings(control_plane, namespace,
                                                                 "shop")}
    assert listener.paths == [], "the operator called an address it was not allowed to"

    with kommerce_operator.allowing_check_urls(listener.address):
        _promote(control_plane, namespace)
        # Allowed now, and called; but its body is not Prometheus text, and whatever it
        # says stays out of the rollout.
        wait_until(lambda: "not Prometheus text" in _status(control_plane, namespace)
                   .get("message", ""), timeout=90, what="the error-rate check read",
                   interval=0.3)
        assert listener.paths == ["/ready", "/metrics"]
        status = _status(control_plane, namespace)
        assert status["reason"] == "PrePromotionCheckFailed" and status["activeColor"] == "blue"
        assert SECRET_IN_BODY not in json.dumps(_get(control_plane, "bgr", "shop", namespace))
        assert all(SECRET_IN_BODY not in e.get("message", "")
                   for e in _warnings(control_plane, namespace, "shop"))

        listener.metrics = METRICS
        output = _promote(control_plane, namespace, "--wait", "--timeout", "90")
        assert "traffic on green" in output
        assert _status(control_plane, namespace)["activeColor"] == "green"
