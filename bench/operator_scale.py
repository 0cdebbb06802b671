"""How fast does the operator bring N CommerceServices to Ready, against the cluster doing
the same work without it, and at what cost?

Each count gets a fresh control plane, so one count's objects never load the next.

* Baseline: the children the operator would write for N CommerceServices, rendered by its
  own pure render function (``operators.commerceservice.render``), applied directly with
  server-side apply (as many at once as the operator has workers), until their N Deployments
  are Available. The owner references are dropped (there is no owner: the garbage collector
  would delete them) and so is the operator's ``managed-by`` label (so the operator, started
  afterwards, does not take them for its own drifted children); the objects are otherwise
  the same.
* Then the operator is started and N CommerceServices are applied with kubectl, in chunks,
  until all are Ready.

Every stage has a timeout derived from the count (``--seconds-per-object``); a stage that
does not finish is reported in the table, with how far it got, instead of ending the run.
The table shows the wall times and their ratio (the goal: within 1.5x of the baseline at
500), reconcile latency p50/p95 from the operator's histogram, the API requests per
reconcile (the operator's own count of its handlers' calls, and the apiserver's count of
everything its ServiceAccount sent, Kopf's watches and status patches included), and the CPU
seconds of the operator, the apiserver and etcd in each stage (from ``/proc/<pid>/stat``).

    .venv/bin/python bench/operator_scale.py --counts 100 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess, install_crds
from operators.commerceservice.render import render
from operators.kube import Kube
from operators.meta import LABEL_MANAGED_BY

console = Console(width=200)

CHUNK = 50  # CommerceServices per kubectl apply
APPLY_WORKERS = 16  # the operator's default KOMMERCE_OPERATOR_WORKERS
GOAL_RATIO = 1.5
RECONCILE_HISTOGRAM = "kommerce_operator_reconcile_duration_seconds"
#: The API Priority and Fairness flow schema every ServiceAccount outside kube-system falls
#: into: on the test bed, only the operator's.
OPERATOR_FLOW_SCHEMA = "service-accounts"


class StageIncomplete(RuntimeError):
    """A stage ran out of time; the message says how far it got."""


def commerce_service_spec(name: str) -> dict[str, Any]:
    return {"component": "review", "image": "kommerce/bench:1", "port": 8000, "replicas": 1,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
            "routes": [{"pathPrefix": f"/api/{name}", "methods": ["GET"]}]}


def commerce_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "metadata": {"name": name}, "spec": commerce_service_spec(name)}


def baseline_children(name: str, namespace: str) -> list[dict[str, Any]]:
    """What the operator applies for ``name``, without owner and operator label."""
    children = render(name, namespace, commerce_service_spec(name), uid=f"bench-{name}")
    for child in children:
        child["metadata"].pop("ownerReferences", None)
        child["metadata"]["labels"][LABEL_MANAGED_BY] = "kommerce-bench"
    return children


def names(count: int) -> list[str]:
    return [f"s{i:04d}" for i in range(count)]


# -- stages ------------------------------------------------------------------------------


def wait_all(check: Callable[[], int], count: int, timeout: float, what: str) -> float:
    """Seconds until ``check`` reports ``count`` done (polling once a second)."""
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < timeout:
        done = check()
        if done >= count:
            return time.monotonic() - started
        time.sleep(1)
    raise StageIncomplete(f"{what}: {done} of {count} after {timeout:.0f} s")


def apply_directly(plane: ControlPlane, manifests: list[dict[str, Any]],
                   timeout: float) -> None:
    """Server-side apply, APPLY_WORKERS at a time, as the operator's client does it."""
    kube = Kube.from_environment(str(plane.kubeconfig))
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(APPLY_WORKERS) as pool:
        # Each object's ServiceAccount first, as the operator does: Pods need it.
        accounts = [m for m in manifests if m["kind"] == "ServiceAccount"]
        rest = [m for m in manifests if m["kind"] != "ServiceAccount"]
        for batch in (accounts, rest):
            for applied, _ in enumerate(pool.map(kube.apply, batch), start=1):
                if time.monotonic() > deadline:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise StageIncomplete(f"applying the children: {applied} of "
                                          f"{len(batch)} objects of this batch after "
                                          f"{timeout:.0f} s")


def apply_in_chunks(plane: ControlPlane, namespace: str, manifests: list[dict[str, Any]],
                    timeout: float) -> None:
    """kubectl apply of CHUNK objects at a time, each call with its share of ``timeout``."""
    deadline = time.monotonic() + timeout
    for start in range(0, len(manifests), CHUNK):
        chunk = manifests[start:start + CHUNK]
        left = deadline - time.monotonic()
        try:
            subprocess.run(
                [str(plane.binaries["kubectl"]), f"--kubeconfig={plane.kubeconfig}", "apply",
                 "--server-side", "-n", namespace, "-f", "-"],
                input=yaml.safe_dump_all(chunk), capture_output=True, text=True, check=True,
                timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            raise StageIncomplete(f"applying the CommerceServices: {start} of "
                                  f"{len(manifests)} applied after {timeout:.0f} s") from None
        except subprocess.CalledProcessError as error:
            raise StageIncomplete(f"kubectl apply failed at object {start}: "
                                  f"{error.stderr.strip()[-300:]}") from None


def count_conditions(plane: ControlPlane, resource: str, namespace: str,
                     condition: str) -> int:
    result = plane.kubectl("get", resource, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return 0
    items = json.loads(result.stdout)["items"]
    return sum(1 for item in items if any(
        c["type"] == condition and c["status"] == "True"
        for c in (item.get("status") or {}).get("conditions") or []))


# -- measurements ------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Every sample of a Prometheus text endpoint, keyed by its line's name+labels."""
    samples = {}
    for line in httpx.get(url, timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def apiserver_metrics(plane: ControlPlane) -> dict[str, float]:
    samples = {}
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith(("apiserver_request_total{",
                            "apiserver_flowcontrol_dispatched_requests_total{")):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str, *must: str) -> float:
    return sum(v for k, v in samples.items()
               if k.startswith(prefix) and all(m in k for m in must))


def histogram_quantile(before: dict[str, float], after: dict[str, float], name: str,
                       quantile: float) -> float:
    """Quantile of the CommerceService reconciles made between two scrapes, interpolated
    in buckets (as PromQL's histogram_quantile does)."""
    buckets = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{") and 'kind="CommerceService"' in key:
            bound = key.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound),
                            value - before.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank, previous_bound, previous_count = quantile * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            fraction = (rank - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return previous_bound


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU seconds each process has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def plane_pids(plane: ControlPlane) -> dict[str, int]:
    # ControlPlane keeps its processes private; their pids are what /proc is read by.
    return {process.name: process.pid for process in getattr(plane, "_processes", [])
            if process.pid is not None}


@contextmanager
def cpu_used(pids: Callable[[], dict[str, int]], into: dict[str, float]) -> Iterator[None]:
    before = cpu_seconds(pids())
    try:
        yield
    finally:
        after = cpu_seconds(pids())
        into.update({name: after[name] - before.get(name, 0.0) for name in after})


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


# -- one count ---------------------------------------------------------------------------


@dataclass
class Result:
    count: int
    baseline: float | None = None
    baseline_cpu: dict[str, float] = field(default_factory=dict)
    ready: float | None = None
    available: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    reconciles: float = 0.0
    own_requests: float = 0.0
    sa_requests: float | None = None
    p50: float = float("nan")
    p95: float = float("nan")
    rss: tuple[float, float] = (float("nan"), float("nan"))
    problems: list[str] = field(default_factory=list)


def measure(count: int, seconds_per_object: float) -> Result:
    timeout = 60 + seconds_per_object * count
    result = Result(count)
    workdir = Path(tempfile.mkdtemp(prefix=f"kommerce-bench-{count}-"))
    with ControlPlane(workdir) as plane:
        install_crds(plane)
        base = plane.create_namespace(f"base-{count}")
        children = [child for name in names(count) for child in baseline_children(name, base)]
        started = time.monotonic()
        try:
            with cpu_used(lambda: plane_pids(plane), result.baseline_cpu):
                apply_directly(plane, children, timeout)
                left = timeout - (time.monotonic() - started)
                wait_all(lambda: count_conditions(plane, "deployments", base, "Available"),
                         count, left, "baseline Deployments Available")
                result.baseline = time.monotonic() - started
        except StageIncomplete as incomplete:
            result.problems.append(f"baseline did not finish: {incomplete}")

        operator = OperatorProcess(plane).start()
        try:
            process = getattr(operator, "_process", None)
            assert process is not None and process.pid is not None
            pid = process.pid

            def pids() -> dict[str, int]:
                return {**plane_pids(plane), "operator": pid}

            shop = plane.create_namespace(f"shop-{count}")
            time.sleep(2)  # let the operator's start-up listing settle
            before, api_before = scrape(operator.metrics_url), apiserver_metrics(plane)
            started = time.monotonic()
            try:
                with cpu_used(pids, result.cpu):
                    apply_in_chunks(plane, shop, [commerce_service(n) for n in names(count)],
                                    timeout)
                    available_at: list[float] = []

                    def ready() -> int:
                        if not available_at and count_conditions(
                                plane, "deployments", shop, "Available") >= count:
                            available_at.append(time.monotonic() - started)
                        return count_conditions(plane, "commerceservices", shop, "Ready")
                    wait_all(ready, count, timeout - (time.monotonic() - started),
                             "CommerceServices Ready")
                    result.ready = time.monotonic() - started
                    result.available = available_at[0] if available_at else result.ready
            except StageIncomplete as incomplete:
                result.problems.append(f"operator stage did not finish: {incomplete}")
            after, api_after = scrape(operator.metrics_url), apiserver_metrics(plane)
            result.rss = rss_mb(pid)
        finally:
            operator.stop()
    name = f"{RECONCILE_HISTOGRAM}_count"
    result.reconciles = total(after, name, "CommerceService") - \
        total(before, name, "CommerceService")
    result.own_requests = total(after, "kommerce_operator_api_requests_total") - \
        total(before, "kommerce_operator_api_requests_total")
    flow = "apiserver_flowcontrol_dispatched_requests_total"
    schema = f'flow_schema="{OPERATOR_FLOW_SCHEMA}"'
    if any(schema in key for key in api_after):
        result.sa_requests = total(api_after, flow, schema) - total(api_before, flow, schema)
    result.p50 = histogram_quantile(before, after, RECONCILE_HISTOGRAM, 0.5)
    result.p95 = histogram_quantile(before, after, RECONCILE_HISTOGRAM, 0.95)
    return result


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(results: list[Result]) -> None:
    table = Table("objects", "baseline: children applied, Deployments Available (s)",
                  "CommerceServices Ready (s)", "ratio", f"goal ≤ {GOAL_RATIO}x",
                  "their Deployments Available (s)", "reconcile p50 / p95 (ms)",
                  "API requests / reconcile: operator's count", "… apiserver's count",
                  "CPU s baseline: apiserver / etcd",
                  "CPU s with operator: operator / apiserver / etcd", "operator RSS / peak (MB)",
                  title="operator scale", show_lines=True)
    for r in results:
        ratio = r.ready / r.baseline if r.ready and r.baseline else None
        per = max(r.reconciles, 1)
        table.add_row(
            str(r.count), seconds(r.baseline), seconds(r.ready),
            "-" if ratio is None else f"{ratio:.2f}",
            "-" if ratio is None else ("met" if ratio <= GOAL_RATIO else "missed"),
            seconds(r.available), f"{r.p50 * 1000:.0f} / {r.p95 * 1000:.0f}",
            f"{r.own_requests / per:.1f} ({r.own_requests:.0f} / {r.reconciles:.0f})",
            "-" if r.sa_requests is None else f"{r.sa_requests / per:.1f}",
            f"{r.baseline_cpu.get('kube-apiserver', 0):.1f} / "
            f"{r.baseline_cpu.get('etcd', 0):.1f}",
            f"{r.cpu.get('operator', 0):.1f} / {r.cpu.get('kube-apiserver', 0):.1f} / "
            f"{r.cpu.get('etcd', 0):.1f}",
            f"{r.rss[0]:.0f} / {r.rss[1]:.0f}")
    console.print(table)
    for r in results:
        for problem in r.problems:
            console.print(f"[red]{r.count}: {problem}[/red]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds-per-object", type=float, default=1.0,
                        help="Each stage's timeout: 60 s plus this much per object.")
    args = parser.parse_args()
    results = []
    for count in args.counts:
        console.print(f"{count} objects ...")
        results.append(measure(count, args.seconds_per_object))
        report(results)
    if any(r.problems for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
