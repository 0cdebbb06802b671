"""``kommerce up``, ``kommerce status``, ``kommerce down``: the whole platform locally.

``up`` runs in the foreground until Ctrl-C (or ``kommerce down`` from elsewhere), or with
``--detach`` leaves everything running and exits; either way the data folder's state file
tells ``status`` and ``down`` what runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.table import Table

from kommerce.platform.launcher import ADMIN_EMAIL, Platform, Started, StartError
from kommerce.platform.state import PlatformState
from kommerce.testbed.cache import REPO_ROOT

#: soft_wrap: URLs and paths stay on one line to copy, whatever the terminal's width.
console = Console(highlight=False, soft_wrap=True)

DATA_DIR_OPTION = typer.Option(
    REPO_ROOT / ".kommerce", "--data-dir", envvar="KOMMERCE_DATA_DIR",
    help="Folder for the databases, logs, secrets and state; it survives restarts.")


def up(
    data_dir: Path = DATA_DIR_OPTION,
    port: int = typer.Option(8080, "--port", envvar="KOMMERCE_GATEWAY_PORT",
                             help="Port of the gateway, the platform's one public address."),
    detach: bool = typer.Option(False, "--detach", "-d",
                                help="Exit once everything is ready; `kommerce down` stops it."),
    cluster: bool = typer.Option(False, "--cluster",
                                 help="Also start the local Kubernetes control plane, install "
                                      "the CRDs, run the operator and apply the sample shop."),
    seed: bool = typer.Option(True, "--seed/--no-seed",
                              help="Seed the demo catalog (once per data folder)."),
    skip: list[str] = typer.Option([], "--skip", metavar="SERVICE",
                                   help="Leave this service out (repeatable), e.g. one that "
                                        "is still being written."),
) -> None:
    """Start the whole platform on this machine: PostgreSQL, Redis, every service, the
    gateway in front, and a demo catalog."""
    console.print(f"[bold]kommerce up[/bold] — data in {data_dir}")
    try:
        platform = Platform(data_dir, gateway_port=port, console=console, seed=seed,
                            skip=skip, cluster=cluster)
        started = platform.start()
    except StartError as error:
        console.print(f"[red]✗ {error}[/red]")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted; everything started was stopped")
        raise typer.Exit(130) from None
    except Exception as error:  # a server that would not start: say what, not a traceback
        detail = getattr(error, "stderr", None) or ""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        console.print(f"[red]✗ start-up failed: {error}[/red]\n{detail}".rstrip())
        console.print(f"  everything started was stopped; logs in {data_dir / 'logs'}")
        raise typer.Exit(1) from None
    _report(started, platform, detach)
    if detach:
        started.state.save()
        return
    started.state.supervisor_pid = os.getpid()
    started.state.save()
    _supervise(platform)


def _report(started: Started, platform: Platform, detach: bool) -> None:
    state = started.state
    kind = "cold start: new data folder" if started.cold else "warm start"
    console.print(f"  {started.seed_note}")
    console.print(f"[bold green]ready in {started.seconds:.1f} s[/bold green] ({kind})")
    console.print(f"  shop API     {state.gateway_url}/api   (e.g. {state.gateway_url}"
                  "/api/products)")
    console.print(f"  API docs     {state.gateway_url}/docs (gateway); each service's "
                  "/docs on its port (kommerce status)")
    console.print(f"  admin        {ADMIN_EMAIL}, password in "
                  f"{platform.data_dir / 'secrets' / 'admin-password'}")
    console.print(f"  logs         {platform.logs}")
    if state.kubeconfig:
        console.print(f"  kubeconfig   export KUBECONFIG={state.kubeconfig}")
    console.print("`kommerce down` stops it" if detach else "Ctrl-C stops it")


def _supervise(platform: Platform) -> None:
    """Wait for Ctrl-C or SIGTERM (``kommerce down``), then stop everything cleanly; a
    process that dies meanwhile is reported, not silently restarted."""
    def stop_on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    # A shell starting `up &` hands it SIGINT ignored; Ctrl-C / kill -INT must still stop it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reported: set[str] = set()
    try:
        while True:
            time.sleep(1)
            for record in platform.state.processes:
                if record.name not in reported and not record.running():
                    reported.add(record.name)
                    console.print(f"[red]{record.name} stopped[/red]; its log: {record.log}")
    except KeyboardInterrupt:
        console.print("stopping ...")
    stubborn = platform.stop()
    if stubborn:
        console.print(f"[red]would not stop: {', '.join(stubborn)}[/red]")
        raise typer.Exit(1)
    console.print("stopped")


def status(
    data_dir: Path = DATA_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show what `kommerce up` runs: each process, its pid and port, and whether it is
    ready. Exits 1 unless everything is ready."""
    state = PlatformState.load(data_dir.resolve())
    if state is None:
        if as_json:
            print(json.dumps({"running": False, "processes": []}))
        else:
            console.print(f"nothing runs from {data_dir} (no state file)")
        raise typer.Exit(1)
    rows = [{**asdict(record), "running": record.running(), "ready": record.ready()}
            for record in state.processes]
    all_ready = bool(rows) and all(row["ready"] for row in rows)
    if as_json:
        print(json.dumps({"running": any(row["running"] for row in rows), "ready": all_ready,
                          "gateway_url": state.gateway_url, "kubeconfig": state.kubeconfig,
                          "processes": rows}, indent=2))
    else:
        table = Table("process", "pid", "port", "state")
        table.add_column("log", overflow="fold")
        for row in rows:
            mark = ("[green]ready[/green]" if row["ready"] else
                    "[yellow]running, not ready[/yellow]" if row["running"] else
                    "[red]stopped[/red]")
            table.add_row(row["name"], str(row["pid"]), str(row["port"] or "-"), mark,
                          row["log"])
        console.print(table)
        console.print(f"gateway {state.gateway_url}"
                      + (f"; kubeconfig {state.kubeconfig}" if state.kubeconfig else ""))
    if not all_ready:
        raise typer.Exit(1)


def down(data_dir: Path = DATA_DIR_OPTION) -> None:
    """Stop everything `kommerce up` started from this data folder (the data stays)."""
    state = PlatformState.load(data_dir.resolve())
    if state is None:
        console.print(f"nothing runs from {data_dir}")
        return
    if state.supervisor_pid is not None:
        # A foreground `up` stops its own processes on SIGTERM; the loop below then only
        # confirms, and covers an `up` that is itself stuck.
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.supervisor_pid, signal.SIGTERM)
    with console.status("stopping"):
        stubborn = state.stop_all()
    for record in reversed(state.processes):
        if record.name not in stubborn:
            console.print(f"  [green]✓[/green] {record.name} stopped")
    if stubborn:
        console.print(f"[red]would not stop: {', '.join(stubborn)}[/red]")
        raise typer.Exit(1)
    state.remove()
