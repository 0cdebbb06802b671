"""``kommerce rollout``: where a blue-green release stands, promote it, abort it, its history.

A release manager's view of a BlueGreenRollout, in kubectl's manner: ``status`` and
``history`` only read; ``promote`` and ``abort`` are the same spec changes one would make
with ``kubectl patch`` (``spec.activeColor``, ``spec.abort``), so the operator's behaviour
does not depend on which tool made them. ``promote`` also stamps a retry annotation, so
promoting again after a failed pre-promotion check runs the checks again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from operators.bluegreen.render import COLOR_LABEL, RETRY_ANNOTATION, color_deployment_name
from operators.bluegreen.spec import RESOURCE, Color, RolloutPhase
from operators.istio import ISTIO_API_VERSION
from operators.kube import Kube, KubeError
from operators.workloads import deployment_progress

P = ParamSpec("P")
R = TypeVar("R")

rollout_app = typer.Typer(
    help="Blue-green rollouts: see where a release stands, promote it, abort it.",
    no_args_is_help=True,
)
# kubectl never wraps a table to 80 columns when piped; neither do we.
console = Console(highlight=False, soft_wrap=True, width=200)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

NAMESPACE = typer.Option(None, "--namespace", "-n",
                         help="Namespace of the rollout (default: the kubeconfig context's).")
KUBECONFIG = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG",
                          help="Kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config).")
SETTLED = {RolloutPhase.HEALTHY.value, RolloutPhase.PAUSED.value}
STUCK = {RolloutPhase.DEGRADED.value, RolloutPhase.ABORTED.value}
_PHASE_STYLE = {"Healthy": "green", "Paused": "cyan", "Progressing": "yellow",
                "Checking": "yellow", "Pending": "yellow", "Degraded": "red", "Aborted": "red"}


class _Cluster:
    """The API client and namespace one command works with."""

    def __init__(self, namespace: str | None, kubeconfig: str | None) -> None:
        self.kube = Kube.from_environment(kubeconfig)
        self.namespace = namespace or _context_namespace(kubeconfig)

    def rollout(self, name: str) -> dict[str, Any]:
        found = self.kube.get(RESOURCE.api_version, RESOURCE.kind, self.namespace, name)
        if found is None:
            _fail(f'Error from server (NotFound): {RESOURCE.plural}.{RESOURCE.group} "{name}" '
                  f"not found in namespace {self.namespace}")
        return found

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.kube.patch(RESOURCE.api_version, RESOURCE.kind, self.namespace, name, body)


def _context_namespace(kubeconfig: str | None) -> str:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def _fail(message: str) -> NoReturn:
    errors.print(message)
    raise typer.Exit(1)


def _age(stamp: str | None) -> str:
    """kubectl's AGE style: 42s, 5m, 3h, 2d; 'in 42s' for a time still to come."""
    if not stamp:
        return "-"
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds())
    span = abs(seconds)
    text = (f"{span}s" if span < 120 else f"{span // 60}m" if span < 7200
            else f"{span // 3600}h" if span < 172800 else f"{span // 86400}d")
    return text if seconds >= 0 else f"in {text}"


def _ago(stamp: str | None) -> str:
    """A timestamp with its age, for the status fields."""
    if not stamp:
        return "-"
    age = _age(stamp)
    moment = datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")
    return f"{moment} ({age if age.startswith('in ') else age + ' ago'})"


def _takeover(state: dict[str, Any]) -> str | None:
    """The rollout's first move of traffic (from the CommerceService's own Deployment to a
    colour) is not a flip and has no history record; both commands word it the same."""
    if state.get("history") or not state.get("lastFlipTime"):
        return None
    return (f"traffic taken over from the CommerceService's own Deployment "
            f"{_ago(state.get('lastFlipTime'))}")


def _last_flip(state: dict[str, Any]) -> str:
    """The newest history record, so ``status`` and ``history`` never disagree."""
    records = state.get("history") or []
    if records:
        newest = records[0]
        return (f"{_ago(newest.get('time'))}: {newest.get('fromColor')} -> "
                f"{newest.get('toColor')} ({newest.get('reason') or '-'})")
    takeover = _takeover(state)
    return f"none yet ({takeover})" if takeover else "none yet"


def _table(*columns: str) -> Table:
    """kubectl-like columns: no borders, only the last column wraps."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        table.add_column(column, no_wrap=index < len(columns) - 1, overflow="fold")
    return table


def _api_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an API failure into kubectl's one-line error and exit code 1."""
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KubeError as error:
            _fail(f"Error from server ({error.status}): {error.message}")
    # The name, the help text and ``__wrapped__``, which typer follows to the options.
    return functools.update_wrapper(wrapped, command, assigned=("__name__", "__doc__"),
                                    updated=())


@rollout_app.command("status")
@_api_errors
def status(name: str = typer.Argument(..., help="Name of the BlueGreenRollout."),
           namespace: str | None = NAMESPACE, kubeconfig: str | None = KUBECONFIG) -> None:
    """Phase, colours, images, Pods, the promotion in flight and the conditions."""
    cluster = _Cluster(namespace, kubeconfig)
    rollout = cluster.rollout(name)
    spec, state = rollout.get("spec") or {}, rollout.get("status") or {}
    service = (spec.get("serviceRef") or {}).get("name", "")
    phase = state.get("phase") or RolloutPhase.PENDING.value
    style = _PHASE_STYLE.get(phase, "white")
    images = state.get("images") or {}
    fields = [
        ("Name", name), ("Namespace", cluster.namespace), ("Service", service),
        ("Phase", f"[{style}]{phase}[/{style}]"
                  + (f" ({state['reason']})" if state.get("reason") else "")),
        ("Message", state.get("message") or "-"),
        ("Active", state.get("activeColor") or "- (the CommerceService's own Pods)"),
        ("Desired", spec.get("activeColor", "-") + (" (abort set)" if spec.get("abort") else "")),
        ("Stable", state.get("stableColor") or "-"),
        ("Last flip", _last_flip(state)),
        ("Scale-down at", _ago(state.get("scaleDownAt")) if state.get("scaleDownAt") else "-"),
    ]
    promotion = state.get("promotion")
    if promotion:
        checks = promotion.get("checks") or "-"
        fields.append(("Promotion", f"to {promotion.get('targetColor')} "
                                    f"({promotion.get('targetImage')}) since "
                                    f"{_ago(promotion.get('startedAt'))}, checks: {checks}"))
    width = max(len(label) for label, _ in fields) + 2
    for label, value in fields:
        console.print(f"{label + ':':<{width}}{value}")

    console.print()
    colours = _table("COLOR", "ROLE", "IMAGE", "DESIRED", "READY", "UP-TO-DATE", "AVAILABLE")
    for color in Color:
        deployment = cluster.kube.get("apps/v1", "Deployment", cluster.namespace,
                                      color_deployment_name(service, color))
        progress = deployment_progress(deployment)
        roles = [role for role, key in (("active", "activeColor"), ("preview", "previewColor"),
                                        ("stable", "stableColor"))
                 if state.get(key) == color.value]
        image = images.get(color.value) or (spec.get(color.value) or {}).get("image") or "-"
        if deployment is None:
            colours.add_row(color.value, ",".join(roles) or "-", image, "-", "-", "-", "-")
            continue
        colours.add_row(color.value, ",".join(roles) or "-", image, str(progress.desired),
                        f"{progress.ready}/{progress.desired}", str(progress.updated),
                        str(progress.available))
    console.print(colours)

    conditions = state.get("conditions") or []
    if conditions:
        console.print()
        table = _table("TYPE", "STATUS", "REASON", "AGE", "MESSAGE")
        for condition in conditions:
            table.add_row(condition.get("type", ""), condition.get("status", ""),
                          condition.get("reason", ""),
                          _age(condition.get("lastTransitionTime")),
                          condition.get("message", ""))
        console.print(table)


@rollout_app.command("promote")
@_api_errors
def promote(name: str = typer.Argument(..., help="Name of the BlueGreenRollout."),
            to: Color | None = typer.Option(
                None, "--to", help="Colour to promote (default: the one without traffic)."),
            wait: bool = typer.Option(False, "--wait", help="Wait until traffic has moved."),
            timeout: float = typer.Option(600, help="Seconds --wait waits at most."),
            namespace: str | None = NAMESPACE, kubeconfig: str | None = KUBECONFIG) -> None:
    """Move traffic to the idle colour once it is Available and its checks pass.

    Sets spec.activeColor and clears spec.abort; promoting again retries failed checks.
    """
    cluster = _Cluster(namespace, kubeconfig)
    rollout = cluster.rollout(name)
    spec, state = rollout.get("spec") or {}, rollout.get("status") or {}
    current = state.get("activeColor") or spec.get("activeColor") or Color.BLUE.value
    target = to or Color(current).other
    if not (spec.get(target.value) or {}).get("image"):
        _fail(f"error: spec.{target.value}.image is not set: stage an image on {target.value} "
              f"first (kubectl patch bgr {name} --type merge -p "
              f"'{{\"spec\":{{\"{target.value}\":{{\"image\":\"...\"}}}}}}')")
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cluster.patch(name, {"metadata": {"annotations": {RETRY_ANNOTATION: stamp}},
                         "spec": {"activeColor": target.value, "abort": False}})
    console.print(f"{RESOURCE.plural}.{RESOURCE.group}/{name} promoted: traffic moves to "
                  f"{target.value} once it is Available and its checks pass")
    if wait:
        _wait_for(cluster, name, target, stamp, timeout)


@rollout_app.command("abort")
@_api_errors
def abort(name: str = typer.Argument(..., help="Name of the BlueGreenRollout."),
          wait: bool = typer.Option(False, "--wait", help="Wait until the abort took effect."),
          timeout: float = typer.Option(120, help="Seconds --wait waits at most."),
          namespace: str | None = NAMESPACE, kubeconfig: str | None = KUBECONFIG) -> None:
    """Stop the release: traffic returns to the stable colour.

    At once while the previous colour is kept (scaleDownDelaySeconds); otherwise any
    promotion in flight stops where it is.
    """
    cluster = _Cluster(namespace, kubeconfig)
    state = cluster.rollout(name).get("status") or {}
    cluster.patch(name, {"spec": {"abort": True}})
    stable = state.get("stableColor") or state.get("activeColor") or "-"
    console.print(f"{RESOURCE.plural}.{RESOURCE.group}/{name} aborted: traffic returns to "
                  f"{stable}")
    if wait:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rollout = cluster.rollout(name)
            state = rollout.get("status") or {}
            if state.get("phase") == RolloutPhase.ABORTED.value and \
                    _traffic_on(cluster, rollout, str(state.get("activeColor"))):
                console.print(f"traffic on {state.get('activeColor')}: {state.get('message')}")
                return
            time.sleep(0.5)
        _fail(f"error: timed out after {timeout:g}s waiting for the abort")


@rollout_app.command("history")
@_api_errors
def history(name: str = typer.Argument(..., help="Name of the BlueGreenRollout."),
            namespace: str | None = NAMESPACE, kubeconfig: str | None = KUBECONFIG) -> None:
    """The last flips, newest first: when, from which colour and image to which, and why."""
    cluster = _Cluster(namespace, kubeconfig)
    state = cluster.rollout(name).get("status") or {}
    records = state.get("history") or []
    if not records:
        takeover = _takeover(state)
        console.print(f"No flips recorded for {name} yet"
                      + (f"; {takeover}." if takeover else "."))
        return
    table = _table("#", "TIME", "AGE", "FROM", "TO", "REASON")
    for index, record in enumerate(records):
        moment = datetime.fromisoformat(record["time"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(len(records) - index), moment, _age(record.get("time")),
                      f"{record.get('fromColor')} ({record.get('fromImage') or '-'})",
                      f"{record.get('toColor')} ({record.get('toImage') or '-'})",
                      record.get("reason") or "-")
    console.print(table)


def _traffic_on(cluster: _Cluster, rollout: dict[str, Any], color: str) -> bool:
    """Whether the Service selects ``color`` and every mesh route sends it all the weight.

    The operator writes the rollout's status before it applies the traffic objects (after
    a restart the status is what they are rendered from), so the status can say a colour
    took the traffic a moment before the objects do; ``--wait`` waits for both.
    """
    service = (rollout.get("spec") or {}).get("serviceRef", {}).get("name")
    if not service:
        return False
    selected = ((cluster.kube.get("v1", "Service", cluster.namespace, service) or {})
                .get("spec") or {}).get("selector") or {}
    if selected.get(COLOR_LABEL) != color:
        return False
    try:
        routes = cluster.kube.get(ISTIO_API_VERSION, "VirtualService", cluster.namespace,
                                  service)
    except KubeError:  # no mesh in this cluster: the Service is all there is
        return True
    for route in ((routes or {}).get("spec") or {}).get("http") or []:
        for destination in route.get("route") or []:
            if destination.get("destination", {}).get("subset") == color and \
                    destination.get("weight") != 100:
                return False
    return True


def _wait_for(cluster: _Cluster, name: str, target: Color, stamp: str,
              timeout: float) -> None:
    """Until traffic is on ``target``, or this very attempt (the one carrying ``stamp``) is
    refused; a verdict on an earlier attempt is not an answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rollout = cluster.rollout(name)
        state = rollout.get("status") or {}
        if state.get("activeColor") == target.value and state.get("phase") in SETTLED \
                and _traffic_on(cluster, rollout, target.value):
            console.print(f"traffic on {target.value}: {state.get('message')}")
            return
        attempt = str((state.get("promotion") or {}).get("attempt", ""))
        this_attempt = attempt.startswith(f"{target.value}=") and attempt.endswith(f"/{stamp}")
        if this_attempt and state.get("phase") in STUCK and \
                state.get("reason") != "ProgressDeadlineExceeded":
            _fail(f"error: {state.get('phase')} ({state.get('reason')}): {state.get('message')}")
        time.sleep(0.5)
    _fail(f"error: timed out after {timeout:g}s waiting for traffic to move to {target.value}")
