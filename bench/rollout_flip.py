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

``--real-node`` runs the sample shop on the test bed's real node instead (root; minutes to
start) and flips the product service under a steady offered load on its Service (``--rate``
requests/s, a new connection each, as kube-proxy balances them): per flip, the time from the
patch to the first and to the last-other-colour answer, and the failed requests; the same
for aborts; next to the object-level flip time (selector and weights read back) measured on
the same flips, the baseline. Goal: no failed request, 100 % on the new colour within 2 s
(p95).

    .venv/bin/python bench/rollout_flip.py --real-node --flips 10 --rate 200
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


def run_on_real_node(flips: int, rate: float) -> None:
    """Flips and aborts of the sample shop's product service under live traffic."""
    import json

    from kommerce.testbed.image import kommerce_image_archive
    from kommerce.testbed.node import NodeCluster
    from kommerce.testbed.node_shop import (
        NEXT_SHOP_IMAGE,
        SHOP_IMAGE,
        SHOP_NAMESPACE,
        NodeBackends,
        NodeShop,
    )
    from kommerce.testbed.traffic import Traffic

    def patch(shop: NodeShop, spec: dict[str, Any]) -> float:
        shop.kubectl("patch", "bluegreenrollout", "product-service", "-n", SHOP_NAMESPACE,
                     "--type", "merge", "-p", json.dumps({"spec": spec}))
        return time.monotonic()

    def objects_on(shop: NodeShop, color: str) -> bool:
        service = shop.json("get", "service", "product-service", "-n", SHOP_NAMESPACE)
        return bool(service["spec"]["selector"].get("kommerce.io/color") == color)

    def measure(shop: NodeShop, traffic: Traffic, spec: dict[str, Any],
                color: str) -> tuple[float, float, float, int]:
        """Patch, then: object switch, first answer and last other answer (s), failures."""
        failed_before = len(traffic.failures())
        started = patch(shop, spec)
        objects = wait(lambda: objects_on(shop, color), 60, f"Service on {color}", 0.02)

        def settled() -> bool:
            last = traffic.all_after(color, started)
            return last is not None and time.monotonic() - (started + last) > 2
        wait(settled, 60, f"every answer from {color}", 0.1)
        first = traffic.first(color, started)
        last = traffic.all_after(color, started)
        assert first is not None and last is not None
        return objects, first, last, len(traffic.failures()) - failed_before

    archive = kommerce_image_archive()
    with tempfile.TemporaryDirectory(prefix="kommerce-bench-node-") as workdir:
        cluster = NodeCluster(Path(workdir), images={SHOP_IMAGE: archive,
                                                     NEXT_SHOP_IMAGE: archive}).start()
        backends = NodeBackends(Path(workdir) / "backends").start()
        try:
            shop = NodeShop(cluster, backends).install()
            # Both colours kept at full size and no pre-promotion checks, so every flip and
            # abort measures moving traffic alone (the checks' time is the spec's choice).
            patch(shop, {"green": {"image": NEXT_SHOP_IMAGE}, "previewReplicas": 2,
                         "replicas": 2, "scaleDownDelaySeconds": 3600,
                         "prePromotionChecks": None})
            shop.wait_for_deployment(SHOP_NAMESPACE, "product-service-green", timeout=300)
            traffic = Traffic(f"{shop.service_url('product-service')}/products?limit=1",
                              workers=8, rate=rate)
            results: dict[str, list[tuple[float, float, float, int]]] = {"flip": [],
                                                                         "abort": []}
            with traffic.running():
                time.sleep(3)
                began, color = time.monotonic(), "blue"
                for _ in range(flips):
                    color = "green" if color == "blue" else "blue"
                    results["flip"].append(measure(shop, traffic, {
                        "activeColor": color, "abort": False}, color))
                for _ in range(max(1, flips // 2)):
                    target = "green" if color == "blue" else "blue"
                    measure(shop, traffic, {"activeColor": target, "abort": False}, target)
                    results["abort"].append(measure(shop, traffic, {"abort": True}, color))
                    patch(shop, {"activeColor": color, "abort": False})
                    time.sleep(2)
                offered_seconds = time.monotonic() - began
            achieved = len(traffic.since(began)) / offered_seconds
        finally:
            # The node first: PostgreSQL waits for its clients (the Pods) before it stops.
            cluster.stop()
            backends.stop()

    table = Table(title=f"Blue-green on the real node under {achieved:.0f} req/s achieved "
                        f"({rate:g} offered; ms unless said)")
    for column in ("measure", "n", "objects p50", "first p50", "all p50", "all p95",
                   "all p95 vs objects", "failed requests"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    for name, rows in results.items():
        objects = [r[0] for r in rows]
        alls = [r[2] for r in rows]
        table.add_row(name, str(len(rows)),
                      f"{statistics.median(objects) * 1000:.0f}",
                      f"{statistics.median(r[1] for r in rows) * 1000:.0f}",
                      f"{statistics.median(alls) * 1000:.0f}",
                      f"{percentile(alls, 0.95) * 1000:.0f}",
                      f"{percentile(alls, 0.95) / percentile(objects, 0.95):.1f}x",
                      str(sum(r[3] for r in rows)))
    console.print(table)
    worst = max(percentile([r[2] for r in rows], 0.95) for rows in results.values())
    failed = sum(r[3] for rows in results.values() for r in rows)
    verdict = "met" if failed == 0 and worst <= 2.0 else "MISSED"
    console.print(f"goal 0 failed requests and 100 % moved <= 2 s p95: {verdict} "
                  f"({failed} failed, p95 {worst * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--refusals", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--real-node", action="store_true",
                        help="flip live traffic on the test bed's real node")
    parser.add_argument("--rate", type=float, default=200,
                        help="offered load in requests/s (--real-node)")
    args = parser.parse_args()
    if args.real_node:
        run_on_real_node(args.flips, args.rate)
        return

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
