"""Start the platform: data servers, one process per service, the gateway; wait; seed.

Everything a run keeps lives in one data folder (default ``.kommerce/``): PostgreSQL's
cluster, Redis's append-only file, the logs, the generated secrets, the seed marker and the
state file. Ports of the data servers and services are picked free on every start and
handed to each process in its environment; only the gateway's port is fixed, since that is
the address people type. Each data server, service and the gateway is recorded as
supervised, with the :class:`ServerProcess` that started it, so the supervisor
(``supervisor.py``) can start it again with the same command line, environment and port.

A start that fails says at which step, with the log tail of the process concerned.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from kommerce.platform import keys
from kommerce.platform.real_node import ClusterNode
from kommerce.platform.seed import (
    MARKER_FILE,
    REVIEWERS,
    Patience,
    ReviewSeedResult,
    SeedError,
    SeedResult,
    admin_token,
    describe_error,
    mark_reviews_seeded,
    mark_seeded,
    reviewer_tokens,
    reviews_seeded,
    seed_catalog,
    seed_reviews,
    seeded,
)
from kommerce.platform.services import (
    GATEWAY,
    ServiceSpec,
    absent_services,
    installed_services,
)
from kommerce.platform.state import PlatformState, ProcessRecord, listens_on
from kommerce.testbed.cache import REPO_ROOT
from kommerce.testbed.ports import LOOPBACK, free_port, port_open
from kommerce.testbed.process import ServerProcess

ADMIN_EMAIL = "admin@kommerce.local"
READY_TIMEOUT_SECONDS = 120.0


class StartError(RuntimeError):
    """Start-up failed for a reason the user can act on; the message says which."""


@dataclass
class Started:
    """What a successful start reports."""

    state: PlatformState
    seconds: float
    #: Whether this start paid for a new data folder or seeded anything, and which.
    cold: bool
    seed_note: str
    cold_reason: str = ""

    @property
    def kind(self) -> str:
        return f"cold start: {self.cold_reason}" if self.cold else "warm start"


def external_url(*names: str) -> str | None:
    """A backend the user points at with an environment variable, instead of the embedded
    server (``KOMMERCE_DATABASE_URL``/``DATABASE_URL``, ``KOMMERCE_REDIS_URL``/``REDIS_URL``)."""
    for name in names:
        if value := os.environ.get(name):
            return value
    return None


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret generated once per data folder, so no two installs share the development
    JWT key or an admin password, and restarts keep sessions and the admin's login."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


class Platform:
    """One local platform in ``data_dir``; :meth:`start` brings it up or raises
    :class:`StartError` after stopping whatever it had started."""

    def __init__(self, data_dir: Path, *, gateway_port: int, console: Console,
                 seed: bool = True, skip: Collection[str] = (),
                 cluster: bool = False, cluster_node: ClusterNode = ClusterNode.AUTO) -> None:
        self.data_dir = data_dir.resolve()
        self.gateway_port = gateway_port
        self.console = console
        self.seed = seed
        self.cluster = cluster
        self.cluster_node = cluster_node
        try:
            self.services = installed_services(skip)
        except ValueError as error:
            raise StartError(str(error)) from None
        self.logs = self.data_dir / "logs"
        self.state = PlatformState(data_dir=str(self.data_dir),
                                   gateway_url=f"http://{LOOPBACK}:{gateway_port}")
        self._servers: list[ServerProcess] = []
        #: The process behind each supervised record, by name (the supervisor replaces an
        #: entry when it starts that process again).
        self.processes: dict[str, ServerProcess] = {}
        self._stoppers: list[Callable[[], None]] = []
        self._first_stoppers: list[Callable[[], None]] = []
        #: What start() is doing, for the message when it fails.
        self.step = "checking the data folder"
        #: How long the services took to become ready: the seeding's patience scales by it.
        self.ready_seconds = 0.0

    # -- the whole start ----------------------------------------------------------------

    def start(self) -> Started:
        started = time.monotonic()
        self._refuse_if_running()
        if port_open(self.gateway_port):
            raise StartError(f"port {self.gateway_port} is already in use, so the gateway "
                             "cannot listen there; stop what uses it or pass --port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name, reason in absent_services().items():
            self.console.print(f"  [dim]- {name}: not started ({reason})[/dim]")
        # A new folder: nothing from an earlier run (no database cluster, nor, with an
        # external database, a seed marker). Cold is that, or any seeding this start does.
        new_folder = not ((self.data_dir / "postgres" / "data" / "PG_VERSION").exists()
                          or (self.data_dir / MARKER_FILE).exists())
        try:
            self.step = "starting PostgreSQL"
            database_urls = self._start_postgres()
            self.step = "starting Redis"
            redis_url = self._start_redis()
            self.step = "starting the services"
            self._start_services(database_urls, redis_url)
            self.step = "waiting for the services to become ready"
            self._wait_until_ready()
            self.step = "seeding the demo catalog"
            seed_note, seeded_now = self._seed()
            if self.cluster:
                from kommerce.platform.cluster import start_cluster

                self.step = "starting the local Kubernetes cluster"
                self.state.kubeconfig = str(start_cluster(self, self.console))
                self.state.save()
        except (StartError, KeyboardInterrupt):
            self.stop()
            raise
        except Exception as error:
            self.stop()
            raise StartError(f"start-up failed while {self.step}: {describe_error(error)}"
                             f"{_output_of(error)}") from error
        except BaseException:
            self.stop()
            raise
        reason = "new data folder" if new_folder else f"seeded {seeded_now}"
        return Started(state=self.state, seconds=time.monotonic() - started,
                       cold=bool(new_folder or seeded_now), seed_note=seed_note,
                       cold_reason=reason)

    def _refuse_if_running(self) -> None:
        previous = PlatformState.load(self.data_dir)
        if previous is None:
            return
        if previous.anything_running():
            raise StartError(f"the platform in {self.data_dir} is already running "
                             f"(gateway {previous.gateway_url}); `kommerce status` shows it, "
                             "`kommerce down` stops it")
        previous.remove()  # left by a crash or a reboot: nothing of it runs

    # -- data servers -------------------------------------------------------------------

    def _start_postgres(self) -> dict[str, str]:
        """Each service's database URL: its own database on the embedded server, or its
        own schema in the one external database."""
        services = [spec for spec in self.services if spec.uses_database]
        if external := external_url("KOMMERCE_DATABASE_URL", "DATABASE_URL"):
            self.console.print(f"  PostgreSQL: external ({_without_password(external)})")
            return {spec.name: external for spec in services}
        from kommerce.testbed.postgres import PostgresServer

        with self.console.status("starting PostgreSQL"):
            began = time.monotonic()
            server = PostgresServer(self.data_dir / "postgres" / "data").start()
            self._stoppers.append(server.stop)
            self._record_server("postgres", server, server.port,
                                server.data_dir.parent / f"postgres-{server.port}.log",
                                stop_signal=int(signal.SIGINT))  # "fast" shutdown
            urls = {spec.name: server.create_database(spec.database) for spec in services}
        self.console.print(f"  [green]✓[/green] PostgreSQL on {LOOPBACK}:{server.port} "
                           f"({time.monotonic() - began:.1f} s)")
        return urls

    def _start_redis(self) -> str:
        if external := external_url("KOMMERCE_REDIS_URL", "REDIS_URL"):
            self.console.print(f"  Redis: external ({_without_password(external)})")
            return external
        from kommerce.testbed.redis import RedisServer

        with self.console.status("starting Redis"):
            began = time.monotonic()
            server = RedisServer(self.data_dir / "redis", persistent=True).start()
            self._stoppers.append(server.stop)
            self._record_server("redis", server, server.port, server.data_dir / "redis.log")
        self.console.print(f"  [green]✓[/green] Redis on {LOOPBACK}:{server.port} "
                           f"(append-only file, {time.monotonic() - began:.1f} s)")
        return server.url

    def _record_server(self, name: str, server: object, port: int, log: Path, *,
                       stop_signal: int = int(signal.SIGTERM)) -> None:
        # The test bed's servers keep their process private; its pid is what lets a later
        # `kommerce down` stop it after this process has exited.
        process: ServerProcess | None = getattr(server, "_process", None)
        if process is None or process.pid is None:
            raise StartError(f"{name} started but its process is unknown")
        self.processes[name] = process
        self.track(ProcessRecord.of(name, process.pid, port, log, stop_signal=stop_signal,
                                    supervised=True))

    def track(self, record: ProcessRecord) -> None:
        """Remember a started process, in the state file at once: should this command be
        killed halfway through starting, `kommerce down` still finds what it left."""
        self.state.processes.append(record)
        self.state.save()

    # -- services -----------------------------------------------------------------------

    def _start_services(self, database_urls: dict[str, str], redis_url: str) -> None:
        services = self.services
        ports = {spec.name: free_port() for spec in services}
        shared = self._shared_env(redis_url)
        # Every service learns every other one's address (the gateway for its route table,
        # the order service for the product service ...); unknown settings are ignored.
        shared |= {spec.url_variable: f"http://{LOOPBACK}:{ports[spec.name]}"
                   for spec in services}
        for spec in services:
            env = {**shared, **spec.env, **keys.service_env(self.data_dir, spec.name),
                   "KOMMERCE_PORT": str(ports[spec.name])}
            if spec.uses_database:
                env["KOMMERCE_DATABASE_URL"] = database_urls[spec.name]
            if spec.name == "user":
                env |= self._admin_env()
            if spec.name == "payment":  # the sandbox remembers its charges across restarts
                env["KOMMERCE_SANDBOX_STATE_PATH"] = str(self.data_dir / "payment-sandbox.jsonl")
            self._spawn(spec, ports[spec.name], env)
        self._spawn(GATEWAY, self.gateway_port,
                    {**shared, **GATEWAY.env, "KOMMERCE_PORT": str(self.gateway_port)})

    def _shared_env(self, redis_url: str) -> dict[str, str]:
        env = {"KOMMERCE_HOST": LOOPBACK, "KOMMERCE_REDIS_URL": redis_url,
               "KOMMERCE_ENVIRONMENT": os.environ.get("KOMMERCE_ENVIRONMENT", "local")}
        # Token keys: the public ones for all, each private one for its service alone.
        env |= keys.shared_env(self.data_dir, [spec.name for spec in self.services])
        return env

    def _admin_env(self) -> dict[str, str]:
        return {"KOMMERCE_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
                "KOMMERCE_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password}

    @property
    def admin_password(self) -> str:
        return read_or_create_secret(self.data_dir / "secrets" / "admin-password",
                                     lambda: secrets.token_urlsafe(18))

    def _spawn(self, spec: ServiceSpec, port: int, env: dict[str, str]) -> None:
        log = self.logs / f"{spec.name}.log"
        process = ServerProcess(spec.name, [sys.executable, "-m", spec.module, *spec.args],
                                log_path=log, env=env, cwd=REPO_ROOT).start()
        self._servers.append(process)
        self.processes[spec.name] = process
        assert process.pid is not None
        self.track(ProcessRecord.of(spec.name, process.pid, port, log,
                                    ready_url=f"http://{LOOPBACK}:{port}/ready",
                                    supervised=True))

    def _wait_until_ready(self) -> None:
        """Poll every service's /ready together and report each as it becomes ready, so a
        slow one does not hide the others' progress; a crash fails at once, with its log."""
        began = time.monotonic()
        pending = {record.name: record for record in self.state.processes if record.ready_url}
        processes = {process.name: process for process in self._servers}
        last_answer: dict[str, str] = {}
        with httpx.Client(timeout=2) as client, \
                self.console.status("waiting for services") as status:
            while pending:
                for name, record in list(pending.items()):
                    if problem := processes[name].exit_problem():
                        raise StartError(f"{name} stopped while starting: {problem}")
                    assert record.ready_url is not None
                    try:
                        response = client.get(record.ready_url)
                    except httpx.HTTPError as error:
                        last_answer[name] = f"no answer ({type(error).__name__})"
                        continue
                    if response.status_code != 200:
                        last_answer[name] = f"{response.status_code} {response.text[:300]}"
                        continue
                    if not listens_on(record.pid, record.port):
                        last_answer[name] = "200 from another program holding its port"
                        continue
                    del pending[name]
                    self.console.print(f"  [green]✓[/green] {name} ready on "
                                       f"{LOOPBACK}:{record.port} "
                                       f"({time.monotonic() - began:.1f} s)")
                if not pending:
                    self.ready_seconds = time.monotonic() - began
                    break
                if time.monotonic() - began > READY_TIMEOUT_SECONDS:
                    name = next(iter(pending))
                    raise StartError(
                        f"{name} was not ready within {READY_TIMEOUT_SECONDS:.0f} s "
                        f"(last /ready: {last_answer.get(name, 'none')}); log tail:\n"
                        f"{processes[name].log_tail()}")
                status.update(f"waiting for {', '.join(pending)}")
                time.sleep(0.2)

    # -- demo catalog ---------------------------------------------------------------------

    def _seed(self) -> tuple[str, str]:
        """Seed what this data folder lacks: the catalog and (when the review service runs)
        its reviews. The note says what happened to each; the second value what was seeded
        now ("" for nothing)."""
        if not self.seed:
            return "catalog not seeded (--no-seed)", ""
        ports = {record.name: record.port for record in self.state.processes}
        if "user" not in ports or "product" not in ports:
            return "catalog not seeded (needs the user and product services)", ""
        catalog_done = seeded(self.data_dir)
        with_reviews = "review" in ports and not reviews_seeded(self.data_dir)
        if catalog_done and not with_reviews:
            return "catalog already seeded" + ("\n  reviews already seeded" if "review" in ports
                                              else ""), ""
        patience = Patience.for_readiness(self.ready_seconds)
        with self.console.status("seeding the demo catalog"):
            try:
                catalog, reviews = asyncio.run(self._seed_async(
                    self._url(ports["user"]), self._url(ports["product"]),
                    self._url(ports["review"]) if with_reviews else None,
                    catalog=not catalog_done, patience=patience))
            except SeedError as error:
                process = self.processes.get(error.service)
                tail = process.log_tail() if process is not None else "(no log)"
                raise StartError(f"seeding the demo catalog: {error}; {error.service} log "
                                 f"tail:\n{tail}") from error
        seeded_now = " and ".join(what for what, result in (("the catalog", catalog),
                                                           ("its reviews", reviews))
                                  if result is not None)
        notes = ["catalog already seeded"]
        if catalog is not None:
            mark_seeded(self.data_dir, catalog)
            notes = [f"catalog seeded: {catalog.created} products created, "
                     f"{catalog.existing} already there ({catalog.seconds:.1f} s)"]
        if reviews is not None:
            mark_reviews_seeded(self.data_dir, reviews)
            notes.append(f"reviews seeded: {reviews.created} written by {len(REVIEWERS)} "
                         f"demo shoppers, {reviews.existing} already there "
                         f"({reviews.seconds:.1f} s)")
        else:
            notes.append("reviews already seeded" if "review" in ports else
                         "reviews not seeded (the review service is not running)")
        return "\n  ".join(notes), seeded_now

    async def _seed_async(self, user_url: str, product_url: str, review_url: str | None, *,
                          catalog: bool, patience: Patience
                          ) -> tuple[SeedResult | None, ReviewSeedResult | None]:
        """The catalog, and meanwhile the demo shoppers' logins (password hashing is the
        slow part), then their reviews of the catalog."""
        async def seed_products() -> SeedResult | None:
            if not catalog:
                return None
            token = await admin_token(user_url, ADMIN_EMAIL, self.admin_password,
                                      patience=patience)
            return await seed_catalog(product_url, token, patience=patience)

        async def log_reviewers_in() -> list[str]:
            if review_url is None:
                return []
            return await reviewer_tokens(user_url, self.demo_shopper_password,
                                         patience=patience)

        products, tokens = await asyncio.gather(seed_products(), log_reviewers_in())
        if review_url is None:
            return products, None
        return products, await seed_reviews(product_url, review_url, tokens,
                                            patience=patience)

    @staticmethod
    def _url(port: int) -> str:
        return f"http://{LOOPBACK}:{port}"

    @property
    def demo_shopper_password(self) -> str:
        """The demo reviewers' password: per data folder, like the admin's, so an
        interrupted seed can log them in again."""
        return read_or_create_secret(self.data_dir / "secrets" / "demo-shopper-password",
                                     lambda: secrets.token_urlsafe(18))

    # -- stop -----------------------------------------------------------------------------

    def on_stop(self, stopper: Callable[[], None], *, first: bool = False) -> None:
        """Run ``stopper`` when this platform stops (after everything started later), or
        with ``first`` before any process is stopped (a real node, whose Pods must go
        before the servers they are clients of)."""
        (self._first_stoppers if first else self._stoppers).append(stopper)

    def stop(self) -> list[str]:
        """Stop everything this platform started, newest first; names that would not stop."""
        for stopper in reversed(self._first_stoppers):
            stopper()
        self._first_stoppers.clear()
        stubborn = self.state.stop_all()
        # Already stopped: this only reaps them (a restarted one is only in processes).
        for process in {id(p): p for p in [*self._servers, *self.processes.values()]}.values():
            process.stop()
        for stopper in reversed(self._stoppers):
            stopper()
        self._servers.clear()
        self.processes.clear()
        self._stoppers.clear()
        if not stubborn:  # else it still says what runs, for `kommerce down` to try again
            self.state.remove()
        return stubborn


def _output_of(error: BaseException) -> str:
    """What a failed command (initdb, kubectl ...) printed, on the lines after."""
    detail = getattr(error, "stderr", None) or ""
    if isinstance(detail, bytes):
        detail = detail.decode(errors="replace")
    return f"\n{detail.rstrip()}" if detail.strip() else ""


def _without_password(url: str) -> str:
    """The URL as it may be printed."""
    try:
        return str(httpx.URL(url).copy_with(password=None))
    except (httpx.InvalidURL, TypeError):
        return "(unparsable URL)"
