"""How fast does a blue-green flip move traffic, and how fast is a bad flip refused?

On a real control plane (etcd, apiserver, controllers, kwok) with the operator running as
its own ServiceAccount, one CommerceService released by one BlueGreenRollout whose two
colours are both kept Available (``previewReplicas == replicas``):

* flip: from the ``kubectl patch``-equivalent of ``spec.activeColor`` until the active
  Service's selector **and** every VirtualService route's weights both point at the new
  colour, read back from the API server — over ``--flips`` flips, alternating colours;
* refuse: with an HTTP pre-promotion check against a loopback server answering 503, from
  the patch until the rollout reports ``PrePromotionCheckFailed`` (traffic untouched);
* baseline, same run, same cluster: the same two objects' worth of change made directly
  (merge-patch a Service selector and a VirtualService weight, read both back), i.e. the
  floor any controller would pay for the writes and the observation.

    .venv/bin/python bench/rollout_flip.py --flips 50 --refusals 10

Goal: flip p95 at most 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess
from operators.kube import Kube

console = Console(width=160)
NAMESPACE = "bench-rollout"
NAME = "shop"
ROLLOUT = ("kommerce.io/v1alpha1", "BlueGreenRollout")
ISTIO = "networking.istio.io/v1"
GOAL_P95 = 1.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.002) -> float:
    """Seconds until ``check`` holds, polling as fast as the API answers."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if check():
            return time.perf_counter() - started
        time.sleep(interval)
    raise TimeoutError(f"{what} not seen within {timeout}s")


def traffic_on(kube: Kube, service: str, color: str) -> bool:
    """The Service selects ``color`` and every route sends it 100 %."""
    live = kube.get("v1", "Service", NAMESPACE, service) or {}
    if live.get("spec", {}).get("selector", {}).get("kommerce.io/color") != color:
        return False
    routes = (kube.get(ISTIO, "VirtualService", NAMESPACE, service) or {}).get(
        "spec", {}).get("http", [])
    return bool(routes) and all(
        any(d["destination"].get("subset") == color and d.get("weight") == 100
            for d in route["route"]) for route in routes)


def rollout_status(kube: Kube) -> dict[str, Any]:
    return (kube.get(*ROLLOUT, NAMESPACE, NAME) or {}).get("status") or {}


def patch_rollout(kube: Kube, spec: dict[str, Any]) -> None:
    kube.patch(*ROLLOUT, NAMESPACE, NAME, {"spec": spec})


@contextmanager
def failing_check_server() -> Iterator[str]:
    """A preview stand-in that fails every readiness probe."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ready"
    finally:
        server.shutdown()
        server.server_close()


def set_up(plane: ControlPlane, kube: Kube, replicas: int) -> None:
    plane.create_namespace(NAMESPACE)
    manifests = [
        {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
         "metadata": {"name": NAME},
         "spec": {"component": "review", "image": "shop:1", "replicas": 1,
                  "autoscaling": {"enabled": False},
                  "routes": [{"pathPrefix": "/api/reviews"}, {"pathPrefix": "/api/ratings"}]}},
        {"apiVersion": "kommerce.io/v1alpha1", "kind": "BlueGreenRollout",
         "metadata": {"name": NAME},
         "spec": {"serviceRef": {"name": NAME}, "blue": {"image": "shop:1"},
                  "green": {"image": "shop:2"}, "replicas": replicas,
                  "previewReplicas": replicas, "scaleDownDelaySeconds": 3600}},
        # The baseline's own pair of objects, changed directly.
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "baseline"},
         "spec": {"selector": {"app": "baseline", "kommerce.io/color": "blue"},
                  "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": ISTIO, "kind": "VirtualService", "metadata": {"name": "baseline"},
         "spec": {"hosts": ["baseline"], "http": [{"route": [
             {"destination": {"host": "baseline", "subset": "blue"}, "weight": 100},
             {"destination": {"host": "baseline", "subset": "green"}, "weight": 0}]}]}},
    ]
    plane.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-",
                  input_text=yaml.safe_dump_all(manifests))

    def both_available() -> bool:
        status = rollout_status(kube)
        deployments = [kube.get("apps/v1", "Deployment", NAMESPACE, f"{NAME}-{c}")
                       for c in ("blue", "green")]
        return status.get("phase") == "Paused" and status.get("activeColor") == "blue" and all(
            (d or {}).get("status", {}).get("availableReplicas") == replicas
            for d in deployments)
    wait(both_available, 120, "both colours Available", interval=0.5)


def baseline_switch(kube: Kube, color: str) -> float:
    other = "green" if color == "blue" else "blue"
    started = time.perf_counter()
    kube.patch("v1", "Service", NAMESPACE, "baseline",
               {"spec": {"selector": {"kommerce.io/color": color}}})
    kube.patch(ISTIO, "VirtualService", NAMESPACE, "baseline", {"spec": {"http": [{"route": [
        {"destination": {"host": "baseline", "subset": color}, "weight": 100},
        {"destination": {"host": "baseline", "subset": other}, "weight": 0}]}]}})
    wait(lambda: traffic_on(kube, "baseline", color), 10, "baseline switch")
    return time.perf_counter() - started


def flip(kube: Kube, color: str) -> float:
    started = time.perf_counter()
    patch_rollout(kube, {"activeColor": color})
    wait(lambda: traffic_on(kube, NAME, color), 30, f"flip to {color}")
    elapsed = time.perf_counter() - started
    # Let the operator settle (status written) before the next flip.
    wait(lambda: rollout_status(kube).get("activeColor") == color
         and rollout_status(kube).get("phase") in ("Healthy", "Paused"), 30, "settled", 0.05)
    return elapsed


def refuse(kube: Kube, color: str, back: str) -> float:
    started = time.perf_counter()
    patch_rollout(kube, {"activeColor": color})
    wait(lambda: rollout_status(kube).get("reason") == "PrePromotionCheckFailed"
         and (rollout_status(kube).get("promotion") or {}).get("targetColor") == color,
         30, f"refusal of {color}", interval=0.005)
    elapsed = time.perf_counter() - started
    assert traffic_on(kube, NAME, back), "a refused flip moved traffic"
    patch_rollout(kube, {"activeColor": back})
    wait(lambda: rollout_status(kube).get("phase") in ("Healthy", "Paused"), 30, "settled",
         0.05)
    return elapsed


def summary(name: str, values: list[float], baseline: list[float] | None) -> list[str]:
    p50, p95 = statistics.median(values), percentile(values, 0.95)
    row = [name, str(len(values)), f"{p50 * 1000:.0f}", f"{p95 * 1000:.0f}",
           f"{max(values) * 1000:.0f}"]
    if baseline:
        row += [f"{p50 / statistics.median(baseline):.1f}x",
                f"{p95 / percentile(baseline, 0.95):.1f}x"]
    else:
        row += ["1.0x", "1.0x"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--refusals", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kommerce-bench-") as workdir, \
            ControlPlane(Path(workdir)) as plane:
        operator = OperatorProcess(plane).start()
        try:
            kube = Kube(plane.api_client())
            set_up(plane, kube, args.replicas)
            colors = ["green", "blue"]
            base = [baseline_switch(kube, colors[i % 2]) for i in range(args.flips)]
            flips = [flip(kube, colors[i % 2]) for i in range(args.flips)]
            current = colors[(args.flips - 1) % 2]
            other = "green" if current == "blue" else "blue"
            # The stand-in is on loopback: the operator may only ask it once allowlisted.
            with failing_check_server() as url, \
                    operator.allowing_check_urls(url.split("/")[2]):
                patch_rollout(kube, {"prePromotionChecks": {"http": [
                    {"url": url, "attempts": 1, "timeoutSeconds": 2}]}})
                wait(lambda: rollout_status(kube).get("phase") in ("Healthy", "Paused"), 30,
                     "settled", 0.05)
                refusals = [refuse(kube, other, current) for _ in range(args.refusals)]
        finally:
            operator.stop()

    table = Table(title=f"Blue-green flip latency ({args.replicas} Pods per colour, both "
                        "Available; ms)")
    for column in ("measure", "n", "p50", "p95", "max", "p50 vs baseline",
                   "p95 vs baseline"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_row(*summary("baseline: patch Service + VirtualService directly", base, None))
    table.add_row(*summary("flip: patch activeColor -> selector and weights switched", flips,
                           base))
    table.add_row(*summary("refuse: patch activeColor -> PrePromotionCheckFailed", refusals,
                           base))
    console.print(table)
    p95 = percentile(flips, 0.95)
    verdict = "met" if p95 <= GOAL_P95 else "MISSED"
    console.print(f"goal flip p95 <= {GOAL_P95:g} s: {verdict} ({p95 * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
