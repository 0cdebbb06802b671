"""The state file a running platform leaves in its data folder.

A detached ``kommerce up`` exits once everything is ready, so ``kommerce status`` and
``kommerce down`` (other processes, maybe other terminals) learn what runs from
``<data-dir>/state.json``: each process's pid, port, log and readiness URL, how often the
supervisor restarted it and why it last stopped, and the supervisor's own pid. Each pid is
stored with its kernel start time, so a pid reused by an unrelated process after a reboot
is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

STATE_FILE = "state.json"
#: Operators started by hand against ``up --cluster`` (README: ``kommerce operator
#: --standalone`` with its ``KUBECONFIG``) each leave ``<pid>.json`` here, so ``kommerce down``
#: stops them with the cluster they talk to.
BY_HAND_DIR = "by-hand"
#: Set in the environment of the processes ``up`` starts: they are in the state file, and
#: must not also register as started by hand.
PLATFORM_CHILD_ENV = "KOMMERCE_PLATFORM_CHILD"


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after ")".
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _listening_sockets(port: int) -> set[str]:
    """The inodes of the TCP sockets listening on ``port`` (``/proc/net/tcp``, ``tcp6``)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """Whether the process ``pid`` itself holds the socket listening on ``port``. Ports are
    picked free and then bound by the child a moment later; on a busy machine another
    program may take the port in between, and its answers must not pass for ours."""
    inodes = _listening_sockets(port)
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return bool(inodes)  # cannot look inside: an open port is all we can tell
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


@dataclass
class ProcessRecord:
    """One process ``up`` started; ``pid`` leads its own process group."""

    name: str
    pid: int
    port: int
    log: str
    started: int | None = None
    ready_url: str | None = None
    #: The signal that stops it quickly and cleanly (PostgreSQL: SIGINT, "fast shutdown").
    stop_signal: int = int(signal.SIGTERM)
    #: Whether the supervisor restarts it when it dies (the cluster's processes: no).
    supervised: bool = False
    #: How often the supervisor started it again, and why it stopped the last time.
    restarts: int = 0
    last_exit: str | None = None
    #: Given up on: it kept dying right after each restart (a crash loop).
    failed: bool = False
    #: Whether ``pid`` leads its own process group (everything ``up`` starts does); one
    #: started by hand from a script may share its shell's group, so only it is signalled.
    own_group: bool = True

    @classmethod
    def of(cls, name: str, pid: int, port: int, log: Path, *, ready_url: str | None = None,
           stop_signal: int = int(signal.SIGTERM), supervised: bool = False) -> ProcessRecord:
        return cls(name=name, pid=pid, port=port, log=str(log),
                   started=process_start_time(pid), ready_url=ready_url,
                   stop_signal=stop_signal, supervised=supervised)

    def replaced_by(self, pid: int) -> None:
        """The same process, started again as ``pid``."""
        self.pid = pid
        self.started = process_start_time(pid)

    def running(self) -> bool:
        """Whether this very process (not a later one with its pid) still runs."""
        now = process_start_time(self.pid)
        if now is None or (self.started is not None and now != self.started):
            return False
        # A zombie has exited; it only waits for its parent to read the status.
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    def ready(self) -> bool:
        """Whether it answers its readiness probe on the port it holds itself (a data
        server: its port is open; a process without a port, such as a controller: that it
        runs)."""
        if not self.running():
            return False
        if self.port == 0:
            return True
        if not listens_on(self.pid, self.port):
            return False
        if self.ready_url is None:
            from kommerce.testbed.ports import port_open

            return port_open(self.port)
        try:
            return httpx.get(self.ready_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 20.0) -> bool:
        """Signal the whole group, wait, then SIGKILL what is left. True when it is gone."""
        if not self.running():
            return True
        kill = os.killpg if self.own_group else os.kill
        try:
            kill(self.pid, self.stop_signal)
            # A stopped (SIGSTOP) process keeps the signal pending until it continues.
            kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.1)
        try:
            kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
        return not self.running()


@dataclass
class PlatformState:
    """What one ``kommerce up`` runs."""

    data_dir: str
    gateway_url: str
    #: The ``up`` process that supervises the others (the foreground one, or the one a
    #: detached ``up`` left behind), and its kernel start time.
    supervisor_pid: int | None = None
    supervisor_started: int | None = None
    #: How often a supervisor took over from one that had died (``kommerce supervise``).
    supervisor_takeovers: int = 0
    kubeconfig: str | None = None
    #: The real node's folder when ``up --cluster`` runs one: `kommerce down` clears what
    #: its containers leave (mounts, network namespaces, rules) if the supervisor could not.
    node_workdir: str | None = None
    processes: list[ProcessRecord] = field(default_factory=list)

    @staticmethod
    def path(data_dir: Path) -> Path:
        return data_dir / STATE_FILE

    def save(self) -> None:
        path = self.path(Path(self.data_dir))
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(asdict(self), indent=2))
        scratch.replace(path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, data_dir: Path) -> PlatformState | None:
        try:
            raw = json.loads(cls.path(data_dir).read_text())
        except FileNotFoundError:
            return None
        processes = [ProcessRecord(**item) for item in raw.pop("processes", [])]
        return cls(**raw, processes=processes)

    def anything_running(self) -> bool:
        return self.supervisor_running() or any(p.running() for p in self.processes)

    def supervisor_running(self) -> bool:
        if self.supervisor_pid is None:
            return False
        return ProcessRecord(name="supervisor", pid=self.supervisor_pid, port=0, log="",
                             started=self.supervisor_started).running()

    def record(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    def stop_all(self) -> list[str]:
        """Stop every process, the last started first (gateway, services, then the data
        servers they need to shut down cleanly); the names that would not stop."""
        return [p.name for p in reversed(self.processes) if not p.stop()]

    def remove(self) -> None:
        self.path(Path(self.data_dir)).unlink(missing_ok=True)


# -- processes started by hand against the platform's cluster ------------------------------


def data_dir_of_kubeconfig(kubeconfig: str | None) -> Path | None:
    """The data folder of the ``kommerce up --cluster`` whose cluster ``kubeconfig`` (a
    ``KUBECONFIG`` value, maybe a list) names: the kubeconfigs ``up`` writes sit in
    ``<data-dir>/cluster/``, beside nothing else with a state file."""
    for entry in (kubeconfig or "").split(os.pathsep):
        if not entry:
            continue
        folder = Path(entry).expanduser().resolve().parent
        if folder.name == "cluster" and (folder.parent / STATE_FILE).exists():
            return folder.parent
    return None


def register_by_hand(data_dir: Path, name: str, port: int = 0) -> Path:
    """Record this process as started by hand against ``data_dir``'s cluster; returns the
    file to remove when it exits (a stale one is harmless: its pid's start time differs)."""
    folder = data_dir / BY_HAND_DIR
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    record = ProcessRecord(name=name, pid=pid, port=port, log="",
                           started=process_start_time(pid),
                           own_group=os.getpgid(pid) == pid)
    path = folder / f"{pid}.json"
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(asdict(record), indent=2))
    scratch.replace(path)
    return path


def started_by_hand(data_dir: Path) -> list[tuple[Path, ProcessRecord]]:
    """The processes registered by :func:`register_by_hand` in ``data_dir``, with their
    files (also of ones no longer running)."""
    found = []
    for path in sorted((data_dir / BY_HAND_DIR).glob("*.json")):
        try:
            found.append((path, ProcessRecord(**json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError):
            continue
    return found
