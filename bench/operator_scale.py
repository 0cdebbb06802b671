"""How fast does the operator bring N CommerceServices to Ready, and at what cost?

Baseline, measured in the same run on the same cluster: N plain Deployments applied with
kubectl until all are Available (the cluster's own speed, kwok included). Then N
CommerceServices until all are Ready. Printed: wall time and its ratio to the baseline,
reconcile latency p50/p95 (from the operator's own histogram), API requests per reconcile,
and the operator's resident memory (current and peak).

    .venv/bin/python bench/operator_scale.py --counts 100 500
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess

console = Console(width=180)


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "app", "image": "kommerce/bench:1", "ports": [
                             {"containerPort": 8000}]}]}}}}


def commerce_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "metadata": {"name": name},
            "spec": {"component": "review", "image": "kommerce/bench:1", "port": 8000,
                     "replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
                     "routes": [{"pathPrefix": f"/api/{name}", "methods": ["GET"]}]}}


def apply_all(plane: ControlPlane, namespace: str, manifests: list[dict[str, Any]]) -> None:
    plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                  input_text=yaml.safe_dump_all(manifests))


def wait_all(check: Callable[[], int], count: int, timeout: float) -> float:
    """Seconds until ``check`` reports ``count`` done (polling once a second)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check() >= count:
            return time.monotonic() - started
        time.sleep(1)
    raise TimeoutError(f"only {check()} of {count} done after {timeout:.0f}s")


def wait_ready(plane: ControlPlane, namespace: str, count: int, timeout: float,
               started: float) -> tuple[float, float]:
    """Seconds since ``started`` until the services' own Deployments were all Available, and
    until the services were all Ready: the gap is the operator's lag in reporting, the rest
    the cluster's own time."""
    available_at: list[float] = []

    def ready() -> int:
        if not available_at and available_deployments(plane, namespace) >= count:
            available_at.append(time.monotonic() - started)
        return ready_services(plane, namespace)
    elapsed = time.monotonic() - started + wait_all(ready, count, timeout)
    return (available_at[0] if available_at else elapsed), elapsed


def available_deployments(plane: ControlPlane, namespace: str) -> int:
    items = plane.kubectl_json("get", "deployments", "-n", namespace)["items"]
    return sum(1 for d in items if any(c["type"] == "Available" and c["status"] == "True"
                                       for c in d.get("status", {}).get("conditions", [])))


def ready_services(plane: ControlPlane, namespace: str) -> int:
    items = plane.kubectl_json("get", "commerceservices", "-n", namespace)["items"]
    return sum(1 for s in items if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in s.get("status", {}).get("conditions", [])))


def scrape(operator: OperatorProcess) -> dict[str, float]:
    """Every sample of the operator's metrics, keyed by its line's name+labels."""
    samples = {}
    for line in httpx.get(operator.metrics_url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def histogram_quantile(before: dict[str, float], after: dict[str, float], name: str,
                       quantile: float) -> float:
    """Quantile of the observations made between two scrapes, interpolated in buckets
    (as PromQL's histogram_quantile does)."""
    buckets = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{") and 'kind="CommerceService"' in key:
            bound = key.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound),
                            value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, previous_bound, previous_count = quantile * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            fraction = (rank - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return previous_bound


def total(samples: dict[str, float], prefix: str, must: str = "") -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix) and must in k)


def apiserver_requests(plane: ControlPlane) -> dict[tuple[str, str, str], float]:
    """The apiserver's own count of requests by (client, resource, verb): what the cluster
    was asked to do, by the operator and by Kubernetes' controllers alike."""
    counts: dict[tuple[str, str, str], float] = {}
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in
                      line[line.index("{") + 1:line.rindex("}")].replace('"', "").split(","))
        key = (labels.get("resource", ""), labels.get("subresource", ""), labels["verb"])
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def print_request_mix(before: dict[tuple[str, str, str], float],
                      after: dict[tuple[str, str, str], float], count: int) -> None:
    """Requests per CommerceService by resource and verb, biggest first: where the
    cluster's time goes (watches excluded, they are long-lived)."""
    table = Table("resource", "subresource", "verb", f"requests / {count} objects",
                  "per object", title=f"apiserver requests while {count} became Ready")
    deltas = sorted(((after[k] - before.get(k, 0.0), k) for k in after
                     if k[2] != "WATCH"), reverse=True)
    for delta, (resource, subresource, verb) in deltas[:15]:
        if delta >= 1:
            table.add_row(resource, subresource, verb, f"{delta:.0f}", f"{delta / count:.1f}")
    console.print(table)


def cpu_seconds(plane: ControlPlane, operator: OperatorProcess) -> dict[str, float]:
    """User+system CPU seconds used so far by each server of the cluster and the operator:
    on two cores, who spends the machine is as telling as how many requests there were."""
    pids = {process.name: process._proc.pid for process in plane._processes
            if process._proc is not None}
    if operator._process is not None:
        pids["operator"] = operator._process.pid
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def run(counts: list[int], timeout: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kommerce-bench-"))
    with ControlPlane(workdir) as plane:
        operator = OperatorProcess(plane).start()
        table = Table("objects", "baseline: Deployments Available (s)",
                      "their Deployments Available (s)", "CommerceServices Ready (s)",
                      "ratio", "reconcile p50 (ms)",
                      "reconcile p95 (ms)", "API requests / reconcile", "operator RSS (MB)",
                      "peak RSS (MB)", title="operator scale")
        try:
            for count in counts:
                base_ns = plane.create_namespace(f"base-{count}")
                started = time.monotonic()
                apply_all(plane, base_ns, [deployment(f"d{i:04d}") for i in range(count)])
                baseline = time.monotonic() - started + wait_all(
                    lambda ns=base_ns: available_deployments(plane, ns), count, timeout)

                ns = plane.create_namespace(f"shop-{count}")
                before, api_before = scrape(operator), apiserver_requests(plane)
                cpu_before = cpu_seconds(plane, operator)
                started = time.monotonic()
                apply_all(plane, ns, [commerce_service(f"s{i:04d}") for i in range(count)])
                available_at, elapsed = wait_ready(plane, ns, count, timeout, started)
                after = scrape(operator)
                print_request_mix(api_before, apiserver_requests(plane), count)
                cpu_after = cpu_seconds(plane, operator)
                console.print("CPU seconds while they became Ready: " + ", ".join(
                    f"{name} {cpu_after[name] - cpu_before.get(name, 0.0):.1f}"
                    for name in sorted(cpu_after, key=lambda n: -cpu_after[n])))

                name = "kommerce_operator_reconcile_duration_seconds"
                reconciles = total(after, f"{name}_count", "CommerceService") - \
                    total(before, f"{name}_count", "CommerceService")
                requests = total(after, "kommerce_operator_api_requests_total") - \
                    total(before, "kommerce_operator_api_requests_total")
                assert operator._process is not None and operator._process.pid is not None
                rss, peak = rss_mb(operator._process.pid)
                table.add_row(
                    str(count), f"{baseline:.1f}", f"{available_at:.1f}", f"{elapsed:.1f}",
                    f"{elapsed / baseline:.2f}",
                    f"{histogram_quantile(before, after, name, 0.5) * 1000:.0f}",
                    f"{histogram_quantile(before, after, name, 0.95) * 1000:.0f}",
                    f"{requests / max(reconciles, 1):.1f}", f"{rss:.0f}", f"{peak:.0f}")
                console.print(f"{count}: {reconciles:.0f} reconciles, {requests:.0f} requests "
                              "(drift checks and status refreshes included)")
        finally:
            operator.stop()
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    run(args.counts, args.timeout)


if __name__ == "__main__":
    main()
