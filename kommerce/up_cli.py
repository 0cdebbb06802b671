"""``kommerce up``, ``status``, ``restart``, ``down``: the whole platform locally.

``up`` runs in the foreground until Ctrl-C (or ``kommerce down`` from elsewhere), or with
``--detach`` forks: the child starts the platform and, once it is ready, stays behind as
its supervisor while the command exits. Either way the ``up`` process left running is the
parent of everything it started and restarts what dies (``supervisor.py``), and the data
folder's state file tells ``status``, ``restart`` and ``down`` what runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kommerce.platform.launcher import ADMIN_EMAIL, Platform, Started, StartError
from kommerce.platform.real_node import ClusterNode
from kommerce.platform.seed import describe_error
from kommerce.platform.state import PlatformState, process_start_time, started_by_hand
from kommerce.platform.supervisor import (
    PLATFORM_LOG,
    Supervisor,
    hold_supervisor_lock,
    load_launch_specs,
    request_restart,
)
from kommerce.platform.watchdog import NAME as WATCHDOG
from kommerce.platform.watchdog import start_watchdog
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
    node: ClusterNode = typer.Option(
        ClusterNode.AUTO, "--node", case_sensitive=False,
        help="With --cluster, where the shop's Pods run: auto (a real node when this machine "
             "can run one: root and the node's packages; else kwok, saying why), real, or "
             "kwok (a fake node: Pods run nothing)."),
    seed: bool = typer.Option(True, "--seed/--no-seed",
                              help="Seed the demo catalog (once per data folder)."),
    skip: list[str] = typer.Option([], "--skip", metavar="SERVICE",
                                   help="Leave this service out (repeatable), e.g. one that "
                                        "is still being written."),
) -> None:
    """Start the whole platform on this machine: PostgreSQL, Redis, every service, the
    gateway in front, and a demo catalog; restart any of them that dies."""
    console.print(f"[bold]kommerce up[/bold] — data in {data_dir}")
    ready_pipe = _fork_detached() if detach else None  # only the child returns
    try:
        platform = Platform(data_dir, gateway_port=port, console=console, seed=seed,
                            skip=skip, cluster=cluster, cluster_node=node)
        started = platform.start()
    except StartError as error:
        console.print(f"[red]✗ {escape(str(error))}[/red]")
        console.print(f"  everything started was stopped; logs in {data_dir / 'logs'}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted; everything started was stopped")
        raise typer.Exit(130) from None
    except Exception as error:  # not foreseen by Platform.start: still say what, not ""
        console.print(f"[red]✗ start-up failed: {escape(describe_error(error))}[/red]")
        console.print(f"  everything started was stopped; logs in {data_dir / 'logs'}")
        raise typer.Exit(1) from None
    lock = hold_supervisor_lock(platform.data_dir)
    if lock is None:  # only if another `kommerce supervise` raced in; Platform refused one
        platform.stop()
        console.print(f"[red]✗ another supervisor took {data_dir}; stopped[/red]")
        raise typer.Exit(1)
    _report(started, platform, detach)
    _record_supervisor(started.state)
    start_watchdog(started.state, platform.processes, platform.logs)
    stopping = _stop_on_signals()
    if ready_pipe is not None:
        _hand_over(ready_pipe, platform.logs / PLATFORM_LOG)
    _supervise(platform, stopping,
               echo=None if detach else (lambda line: console.print(line, markup=False)))
    os.close(lock)


def _record_supervisor(state: PlatformState) -> None:
    state.supervisor_pid = os.getpid()
    state.supervisor_started = process_start_time(os.getpid())
    state.save()


def _fork_detached() -> int:
    """Fork. The child (in a session of its own, so the terminal's Ctrl-C and hang-up do
    not reach it) starts the platform and supervises it; it gets the pipe on which to say
    it is ready. The parent shows the child's output, waits for that word or the child's
    exit, and exits with the outcome: 0 once ready, else the child's exit code."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.setsid()
        # Interrupted while starting (the parent forwards Ctrl-C), it stops what it began.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return write_end
    os.close(write_end)

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGINT)  # the child stops what it started, then exits

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    if os.read(read_end, 16) == b"ready":
        raise typer.Exit(0)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    raise typer.Exit(code if code > 0 else 1)


def _hand_over(ready_pipe: int, log: Path) -> None:
    """Stop writing to the terminal (or the pipe of whoever ran ``up --detach``, who waits
    for it to close) and say ready: from here on the supervisor writes to the platform's
    log only."""
    sys.stdout.flush()
    sys.stderr.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(nothing)
    os.write(ready_pipe, b"ready")
    os.close(ready_pipe)


def _stop_on_signals() -> Callable[[], bool]:
    """Ctrl-C, SIGTERM (``kommerce down``) and a closed terminal ask the supervisor to
    stop; it finishes what it is doing (a restart half done would leave a process no
    record names) and then stops everything."""
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    # A shell starting `up &` hands it SIGINT ignored; Ctrl-C / kill -INT must still stop it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, note)
    return lambda: bool(received)


def _report(started: Started, platform: Platform, detach: bool) -> None:
    state = started.state
    console.print(f"  {started.seed_note}")
    console.print(f"[bold green]ready in {started.seconds:.1f} s[/bold green] "
                  f"({started.kind})")
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


def _supervise(platform: Platform, stopping: Callable[[], bool],
               echo: Callable[[str], None] | None) -> None:
    """Restart what dies until asked to stop, then stop everything cleanly."""
    supervisor = Supervisor(platform.state, platform.processes, logs=platform.logs,
                            echo=echo)
    supervisor.run(stopping)
    supervisor.note("stopping ...")
    stubborn = platform.stop()
    if stubborn:
        supervisor.note(f"would not stop: {', '.join(stubborn)}")
        raise typer.Exit(1)
    supervisor.note("stopped")


def supervise(
    data_dir: Path = DATA_DIR_OPTION,
    detach: bool = typer.Option(False, "--detach", "-d",
                                help="Exit once it supervises; `kommerce down` stops it all."),
) -> None:
    """Take over supervising a running platform whose supervisor is gone (its watchdog does
    this on its own within a second; this is for when the watchdog is gone too). Runs until
    `kommerce down`, restarting what dies, then stops everything."""
    data_dir = data_dir.resolve()
    if PlatformState.load(data_dir) is None:
        console.print(f"[red]✗ nothing runs from {data_dir} (no state file)[/red]")
        raise typer.Exit(1)
    ready_pipe = _fork_detached() if detach else None  # only the child returns
    lock = hold_supervisor_lock(data_dir)
    # Read after taking the lock: a supervisor that took over just before wrote itself in.
    state = PlatformState.load(data_dir)
    if lock is None or state is None or state.supervisor_running():
        console.print(f"[red]✗ {data_dir} is supervised already"
                      + (f" (pid {state.supervisor_pid})" if state else "") + "[/red]")
        raise typer.Exit(1)
    stopping = _stop_on_signals()
    previous = state.supervisor_pid
    state.supervisor_takeovers += 1
    _record_supervisor(state)
    logs = data_dir / "logs"
    processes = load_launch_specs(data_dir, [p.name for p in state.processes if p.supervised])
    supervisor = Supervisor(state, processes, logs=logs,
                            echo=None if detach else (lambda line: console.print(line,
                                                                                 markup=False)))
    supervisor.note(f"took over from the supervisor pid {previous}, which is gone "
                    f"(takeover {state.supervisor_takeovers})")
    if ready_pipe is not None:
        _hand_over(ready_pipe, logs / PLATFORM_LOG)
    supervisor.run(stopping)
    supervisor.note("stopping ...")
    stubborn = _stop_everything(state)
    if stubborn:
        supervisor.note(f"would not stop: {', '.join(stubborn)}")
        raise typer.Exit(1)
    supervisor.note("stopped")
    os.close(lock)


def _stop_everything(state: PlatformState) -> list[str]:
    """Stop what ``state`` names, newest first, and clear what a real node's containers
    leave; without the Platform that started it (a supervisor that took over, or
    ``down`` with no supervisor), this is all there is to do. The names that would not
    stop; the state file goes once nothing is left."""
    stubborn = state.stop_all()
    if state.node_workdir:  # no-op when the node was stopped cleanly
        from kommerce.testbed.node import clean_up_node_leftovers

        clean_up_node_leftovers(Path(state.node_workdir))
    if not stubborn:
        state.remove()
    return stubborn


def status(
    data_dir: Path = DATA_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show what `kommerce up` runs: each process, its pid and port, whether it is ready,
    how often it was restarted and why it last stopped. Exits 1 unless everything is
    ready."""
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
    supervised = state.supervisor_running()
    if as_json:
        print(json.dumps({"running": any(row["running"] for row in rows), "ready": all_ready,
                          "gateway_url": state.gateway_url, "kubeconfig": state.kubeconfig,
                          "supervisor": {"pid": state.supervisor_pid, "running": supervised,
                                         "takeovers": state.supervisor_takeovers},
                          "processes": rows}, indent=2))
    else:
        table = Table("process", "pid", "port")
        # Phrases stay on one line ("killed by SIGKILL"); the log's path folds instead.
        for column in ("state", "restarts", "last exit"):
            table.add_column(column, no_wrap=True)
        table.add_column("log", overflow="fold")
        for row in rows:
            mark = ("[green]ready[/green]" if row["ready"] else
                    "[yellow]running, not ready[/yellow]" if row["running"] else
                    "[red]failed (crash loop)[/red]" if row["failed"] else
                    "[yellow]stopped, restarting[/yellow]" if supervised and row["supervised"]
                    else "[red]stopped[/red]")
            table.add_row(row["name"], str(row["pid"]), str(row["port"] or "-"), mark,
                          str(row["restarts"]), row["last_exit"] or "-",
                          _within(Path(row["log"]), Path(state.data_dir)))
        console.print(table)
        console.print(f"logs relative to {state.data_dir}; gateway {state.gateway_url}"
                      + (f"; kubeconfig {state.kubeconfig}" if state.kubeconfig else ""))
        for _, record in started_by_hand(Path(state.data_dir)):
            if record.running():
                console.print(f"also {record.name}, pid {record.pid}: `kommerce down` stops "
                              "it too")
        takeovers = (f" (it took over {state.supervisor_takeovers} time(s) from one that "
                     "died)" if state.supervisor_takeovers else "")
        console.print(f"supervised by pid {state.supervisor_pid}{takeovers}" if supervised
                      else "[red]no supervisor runs: a process that dies stays down "
                           "(`kommerce supervise --detach` takes over)[/red]")
    if not all_ready:
        raise typer.Exit(1)


def _within(path: Path, folder: Path) -> str:
    """The path relative to the data folder when it is inside (the table's log column)."""
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def restart(
    service: str = typer.Argument(..., help="The process to restart: a service such as "
                                            "order, the gateway, postgres or redis."),
    data_dir: Path = DATA_DIR_OPTION,
    timeout: float = typer.Option(180, "--timeout",
                                  help="Seconds to wait for it to be ready again."),
) -> None:
    """Restart one process of the running platform (stopped cleanly, started again with
    the same settings and port) and wait until it is ready; also brings back one given up
    on after a crash loop."""
    data_dir = data_dir.resolve()
    state = PlatformState.load(data_dir)
    if state is None:
        console.print(f"[red]✗ nothing runs from {data_dir} (no state file)[/red]")
        raise typer.Exit(1)
    record = state.record(service)
    if record is None or not record.supervised:
        names = ", ".join(p.name for p in state.processes if p.supervised)
        console.print(f"[red]✗ no process named {escape(service)} is supervised; the "
                      f"processes are {names}[/red]")
        raise typer.Exit(2)
    if not state.supervisor_running():
        console.print(f"[red]✗ no supervisor runs for {data_dir} (its `kommerce up` is "
                      "gone, and its watchdog too); `kommerce supervise --detach` takes "
                      "over[/red]")
        raise typer.Exit(1)
    old_pid, began = record.pid, time.monotonic()
    request_restart(data_dir, service)
    with console.status(f"restarting {service}"):
        while True:
            current = PlatformState.load(data_dir)
            now = current.record(service) if current is not None else None
            if now is not None and now.pid != old_pid and now.ready():
                break
            if time.monotonic() - began > timeout:
                console.print(f"[red]✗ {service} was not ready again within {timeout:.0f} s; "
                              f"its log: {record.log}[/red]")
                raise typer.Exit(1)
            time.sleep(0.3)
    assert now is not None
    console.print(f"[green]✓[/green] {service} restarted (pid {old_pid} → {now.pid}), "
                  f"ready in {time.monotonic() - began:.1f} s")


def down(data_dir: Path = DATA_DIR_OPTION) -> None:
    """Stop everything `kommerce up` started from this data folder (the data stays), and
    the operators started by hand against its cluster."""
    data_dir = data_dir.resolve()
    by_hand = _stop_started_by_hand(data_dir)
    state = PlatformState.load(data_dir)
    if state is None:
        if not by_hand:
            console.print(f"nothing runs from {data_dir}")
        return
    with console.status("stopping"):
        # The supervisor goes first, so it restarts nothing that is being stopped: on
        # SIGTERM it stops everything itself, and what follows only confirms. With none
        # running, its watchdog goes first, and holding the lock keeps a supervisor it may
        # have started a moment ago from taking over.
        lock = _stop_supervision(data_dir, state)
        # The supervisor's latest view (it renews pids on restarts); gone once it stopped
        # everything.
        latest = PlatformState.load(data_dir) or state
        stubborn = _stop_everything(latest)
        if lock is not None:
            os.close(lock)
    for record in reversed(latest.processes):
        if record.name not in stubborn:
            console.print(f"  [green]✓[/green] {record.name} stopped")
    if stubborn:
        console.print(f"[red]would not stop: {', '.join(stubborn)}[/red]")
        raise typer.Exit(1)


def _stop_supervision(data_dir: Path, state: PlatformState,
                      timeout: float = 150.0) -> int | None:
    """Stop the supervisor, or with none its watchdog, and hold the supervisor lock so no
    supervisor takes over while ``down`` stops the rest (None: it could not be had)."""
    deadline = time.monotonic() + timeout
    while True:
        if state.supervisor_running():
            _stop_supervisor(state)
        elif (watchdog := state.record(WATCHDOG)) is not None:
            watchdog.stop()
        if (lock := hold_supervisor_lock(data_dir)) is not None:
            return lock
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)  # a supervisor is taking over: it writes itself in, then is stopped
        state = PlatformState.load(data_dir) or state


def _stop_started_by_hand(data_dir: Path) -> list[str]:
    """Stop what registered itself as started by hand against this folder's cluster (an
    operator run per the README), first: it would keep calling an apiserver that goes away.
    Exits 1 if one would not stop; returns what was stopped."""
    stopped = []
    for path, record in started_by_hand(data_dir):
        if record.running():
            if not record.stop():
                console.print(f"[red]would not stop: {record.name}, pid {record.pid}[/red]")
                raise typer.Exit(1)
            console.print(f"  [green]✓[/green] {record.name} stopped (pid {record.pid})")
            stopped.append(record.name)
        path.unlink(missing_ok=True)
    return stopped


def _stop_supervisor(state: PlatformState, timeout: float = 120.0) -> None:
    """SIGTERM the supervisor and wait for it; one stuck past ``timeout`` is killed."""
    assert state.supervisor_pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while state.supervisor_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    if state.supervisor_running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.supervisor_pid, signal.SIGKILL)
