"""``kommerce up --detach`` keeps its processes running: a process killed with SIGKILL (a
service, the gateway, PostgreSQL, Redis) is started again, ``kommerce status`` shows the
restart, the shop serves again and orders caught mid-saga finish, all without ``down`` and
``up``; ``kommerce restart`` restarts one process; one that keeps dying is given up on; a
killed supervisor is replaced by one that takes over, and ``down`` still stops everything.

One platform for the module (it takes a minute to start on a busy machine), in a data
folder of its own: these tests kill its processes, which would disturb the session-wide
shop other tests use at the same time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kommerce.platform.state import PlatformState
from kommerce.platform.supervisor import (
    PLATFORM_LOG,
    RestartPolicy,
    describe_exit,
    hold_supervisor_lock,
    load_launch_specs,
    save_launch_specs,
    supervisor_lock_free,
)
from kommerce.testbed.ports import wait_until
from kommerce.testbed.postgres import SUPERUSER, postgres_bin_dir
from kommerce.testbed.process import ServerProcess
from tests.shop import Shop, Shopper, running_shop

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: Long enough for a restart (a service imports for seconds on a loaded machine) plus the
#: supervisor's backoff; never a measure of speed.
RESTART_TIMEOUT = 180.0


def test_the_restart_delay_doubles_to_its_cap_and_a_crash_loop_is_given_up() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    deaths = 0
    for _ in range(policy.crash_loop_limit):
        deaths = policy.deaths_in_a_row(deaths, ran_for=2)
        assert not policy.gives_up(deaths)
    assert policy.gives_up(policy.deaths_in_a_row(deaths, ran_for=2))
    # A process that ran for a while before dying was healthy: its count starts over.
    assert policy.deaths_in_a_row(deaths, ran_for=policy.stable_after) == 1


def test_an_exit_is_told_by_its_signal_or_code() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory.mktemp("supervised") / "kommerce") as shop:
        yield shop


def process(shop: Shop, name: str) -> dict[str, Any]:
    report = shop.status()
    return next(p for p in report["processes"] if p["name"] == name)


def kill_hard(shop: Shop, name: str) -> dict[str, Any]:
    """SIGKILL the process (its group leader, as ``kill -9 <pid>`` from status does);
    what status said about it just before."""
    before = process(shop, name)
    assert before["ready"], before
    os.kill(before["pid"], signal.SIGKILL)
    return before


def wait_restarted(shop: Shop, name: str, before: dict[str, Any]) -> dict[str, Any]:
    """Status once ``name`` runs again as a new pid and answers its probe."""
    def restarted() -> bool:
        now = process(shop, name)
        return now["pid"] != before["pid"] and now["ready"]

    wait_until(restarted, timeout=RESTART_TIMEOUT, what=f"{name} restarted", interval=0.5)
    return process(shop, name)


def new_shopper(shop: Shop) -> Shopper:
    """A registered shopper; tried again while the gateway times out on a busy machine
    (password hashing queues), which is not what these tests are about."""
    shoppers: list[Shopper] = []
    wait_until(lambda: bool(shoppers.append(shop.register()) or shoppers), timeout=120,
               what="a shopper registered", interval=1)
    return shoppers[-1]


def shop_serves(shop: Shop) -> None:
    """A new shopper registers, orders and sees the order confirmed: every service and the
    data servers behind them answer again. A process restarted a moment ago may still be
    reconnecting, so the session is tried again for a while (``wait_until`` keeps the last
    failure for its message)."""
    finished: list[dict[str, Any]] = []

    def one_session() -> bool:
        shopper = new_shopper(shop)
        variant = shop.in_stock_variant()
        order = shop.place_order(shopper, variant["id"])
        finished.append(finished_order(shop, shopper, order["id"]))
        return True

    wait_until(one_session, timeout=RESTART_TIMEOUT, what="the shop serving again",
               interval=2)
    assert finished[-1]["status"] == "CONFIRMED", finished[-1]


@pytest.mark.parametrize("name", ["order", "gateway", "postgres", "redis"])
def test_a_killed_process_is_restarted_and_the_shop_serves_again(shop: Shop,
                                                                  name: str) -> None:
    supervisor = shop.status()["supervisor"]
    before = kill_hard(shop, name)

    after = wait_restarted(shop, name, before)
    assert after["restarts"] == before["restarts"] + 1, after
    assert after["last_exit"] == "killed by SIGKILL", after
    assert after["port"] == before["port"], "the others hold its address"
    shop_serves(shop)

    # Logged where people look: the platform's log and the process's own.
    platform_log = (shop.data_dir / "logs" / PLATFORM_LOG).read_text()
    assert f"{name} (pid {before['pid']}) killed by SIGKILL; restarting it" in platform_log
    assert f"{name} started again as pid {after['pid']}" in platform_log
    assert f"[kommerce supervisor] {name} (pid {before['pid']}) killed by SIGKILL" in \
        Path(after["log"]).read_text(errors="replace")
    # The same supervisor, no `down`/`up` in between; `status` shows it in its table too.
    assert shop.status()["supervisor"] == supervisor and supervisor["running"], supervisor
    table = shop.kommerce("status").stdout
    assert "restarts" in table and "killed by SIGKILL" in table, table


def finished_order(shop: Shop, shopper: Shopper, order_id: str) -> dict[str, Any]:
    """The order once CONFIRMED or CANCELLED, asked every two seconds (the gateway allows a
    client fifty order reads a minute)."""
    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        seen.append(shop.order(shopper, order_id))
        return seen[-1]["status"] in ("CONFIRMED", "CANCELLED")

    wait_until(finished, timeout=RESTART_TIMEOUT, what=f"order {order_id} finished",
               interval=2)
    return seen[-1]


def product_database(shop: Shop, sql: str) -> str:
    """One query against the product service's database on the platform's PostgreSQL, in
    the schema that holds its reservations (a service works in a schema of its own)."""
    port = process(shop, "postgres")["port"]

    def psql(query: str, schema: str = "public") -> str:
        return subprocess.run(
            [str(postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U",
             SUPERUSER, "-d", "kommerce_product", "-v", "ON_ERROR_STOP=1", "-tAc", query],
            env={**os.environ, "PGOPTIONS": f"-c search_path={schema}"},
            check=True, capture_output=True, text=True, timeout=60).stdout.strip()

    schema = psql("SELECT table_schema FROM information_schema.tables "
                  "WHERE table_name = 'reservations'")
    assert schema and "\n" not in schema, schema
    return psql(sql, schema)


def test_orders_caught_mid_saga_by_a_killed_order_service_finish_and_hold_no_stock(
        shop: Shop) -> None:
    shopper = new_shopper(shop)
    variant = shop.in_stock_variant("shoes")
    available = variant["stock"]["available"]
    count = min(5, available)
    before = process(shop, "order")
    orders = [shop.place_order(shopper, variant["id"]) for _ in range(count)]
    os.kill(before["pid"], signal.SIGKILL)  # right after the last checkout: mid-saga
    killed_at = datetime.now(UTC)

    wait_restarted(shop, "order", before)
    finished = [finished_order(shop, shopper, order["id"]) for order in orders]
    # At least one saga was still running when its process died, and completed after.
    ends = [_utc(order["timeline"][-1]["created_at"]) for order in finished]
    assert max(ends) > killed_at, (killed_at, ends)
    assert [order["status"] for order in finished] == ["CONFIRMED"] * count, finished

    # Stock: each confirmed order committed its unit, no hold is left behind.
    def holds() -> str:
        return product_database(shop, "SELECT id, owner, created_at, expires_at "
                                      "FROM reservations WHERE status = 'active'")

    try:
        wait_until(lambda: holds() == "", timeout=60, what="no active reservation",
                   interval=1)
    except TimeoutError as error:
        raise AssertionError(f"still held: {holds()}; orders: {finished}") from error
    reserved = product_database(shop, f"SELECT reserved FROM variants "
                                      f"WHERE id = '{variant['id']}'")
    assert reserved == "0", reserved
    after = shop.variant(variant["product_id"], variant["id"])["stock"]["available"]
    assert after == available - count, (available, after)


def _utc(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_kommerce_restart_restarts_one_process_and_waits_until_it_is_ready(
        shop: Shop) -> None:
    before = {p["name"]: p for p in shop.status()["processes"]}

    result = shop.kommerce("restart", "review")
    after = {p["name"]: p for p in shop.status()["processes"]}
    review = after["review"]
    assert f"review restarted (pid {before['review']['pid']} → {review['pid']})" in \
        result.stdout, result.stdout
    assert review["ready"] and review["restarts"] == before["review"]["restarts"] + 1
    assert review["last_exit"].endswith("(restart requested)"), review
    assert {name: p["pid"] for name, p in after.items() if name != "review"} == \
        {name: p["pid"] for name, p in before.items() if name != "review"}

    unknown = shop.kommerce("restart", "no-such-service", check=False)
    assert unknown.returncode == 2
    assert "no process named no-such-service is supervised" in unknown.stdout, unknown.stdout


def test_a_process_that_keeps_dying_is_given_up_on_and_restart_brings_it_back(
        shop: Shop) -> None:
    before = kill_hard(shop, "shipping")
    # Take its port while it is down: every restart then fails to listen and exits.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            squatter.bind(("127.0.0.1", before["port"]))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    squatter.listen()
    try:
        wait_until(lambda: process(shop, "shipping")["failed"], timeout=400,
                   what="shipping given up on", interval=1)
        failed = process(shop, "shipping")
        assert failed["restarts"] == before["restarts"] + 5, failed
        # It could not listen (uvicorn exits non-zero on a start-up failure).
        assert failed["last_exit"].startswith("exited with code "), failed
        assert failed["last_exit"] != "exited with code 0", failed
        assert "address already in use" in Path(failed["log"]).read_text(errors="replace")
        assert "failed (crash loop)" in shop.kommerce("status", check=False).stdout
        log = (shop.data_dir / "logs" / PLATFORM_LOG).read_text().splitlines()
        assert any(line.split()[1] == "shipping" and "given up (crash loop)" in line
                   for line in log), log[-8:]
    finally:
        squatter.close()

    result = shop.kommerce("restart", "shipping")
    assert "shipping restarted" in result.stdout, result.stdout
    back = process(shop, "shipping")
    assert back["ready"] and not back["failed"], back
    shop_serves(shop)


def test_a_launch_spec_starts_the_same_process_and_only_its_owner_reads_it(
        tmp_path: Path) -> None:
    process = ServerProcess("svc", ["/bin/true", "--flag"], log_path=tmp_path / "svc.log",
                            env={"KOMMERCE_SECRET": "s3cret"}, cwd=tmp_path)
    save_launch_specs(tmp_path, {"svc": process})

    loaded = load_launch_specs(tmp_path, ["svc", "never-saved"])
    assert list(loaded) == ["svc"], "a process without a spec is reported, not restarted"
    again = loaded["svc"]
    assert (again.argv, again.env, again.log_path, again.cwd) == \
        (process.argv, process.env, process.log_path, process.cwd)
    assert (tmp_path / "launch" / "svc.json").stat().st_mode & 0o077 == 0


def test_only_one_supervisor_holds_a_data_folder(tmp_path: Path) -> None:
    held = hold_supervisor_lock(tmp_path)
    assert held is not None
    try:
        assert hold_supervisor_lock(tmp_path) is None
        assert not supervisor_lock_free(tmp_path)
    finally:
        os.close(held)
    assert supervisor_lock_free(tmp_path)


def wait_taken_over(shop: Shop, gone: dict[str, Any]) -> dict[str, Any]:
    """Status's supervisor once another one than ``gone`` runs."""
    def taken_over() -> bool:
        now = shop.status()["supervisor"]
        return bool(now["running"]) and now["pid"] != gone["pid"]

    wait_until(taken_over, timeout=RESTART_TIMEOUT, what="a supervisor took over",
               interval=0.5)
    return dict(shop.status()["supervisor"])


def test_a_killed_supervisor_is_replaced_by_one_that_restarts_what_dies_and_down_stops_all(
        shop: Shop) -> None:
    """Last in the module: it ends with ``kommerce down``."""
    first = shop.status()["supervisor"]
    beside = shop.kommerce("supervise", "--detach", check=False)
    assert beside.returncode == 1 and "is supervised already" in beside.stdout, beside.stdout
    os.kill(first["pid"], signal.SIGKILL)

    second = wait_taken_over(shop, first)
    assert second["takeovers"] == first["takeovers"] + 1, second
    log = (shop.data_dir / "logs" / PLATFORM_LOG).read_text()
    assert f"the supervisor (pid {first['pid']}) is gone" in log, log[-2000:]
    assert f"took over from the supervisor pid {first['pid']}, which is gone" in log
    assert "it took over 1 time(s)" in shop.kommerce("status").stdout

    # What the first one started, the second restarts, though it is not its parent.
    order = kill_hard(shop, "order")
    restarted = wait_restarted(shop, "order", order)
    assert restarted["last_exit"] == "stopped (exit status unknown)", restarted
    assert restarted["restarts"] == order["restarts"] + 1, restarted
    shop_serves(shop)

    # The watchdog is supervised like the rest, and the restarted one keeps watch.
    watchdog = kill_hard(shop, "watchdog")
    wait_restarted(shop, "watchdog", watchdog)
    os.kill(second["pid"], signal.SIGKILL)
    third = wait_taken_over(shop, second)
    assert third["takeovers"] == first["takeovers"] + 2, third

    # Both gone at once: nothing takes over until someone runs `kommerce supervise`.
    watchdog = process(shop, "watchdog")
    os.kill(watchdog["pid"], signal.SIGKILL)
    os.kill(third["pid"], signal.SIGKILL)
    wait_until(lambda: not shop.status()["supervisor"]["running"], timeout=30,
               what="the supervisor gone", interval=0.2)
    assert "`kommerce supervise --detach` takes over" in \
        shop.kommerce("status", check=False).stdout
    shop.kommerce("supervise", "--detach")
    fourth = shop.status()["supervisor"]
    assert fourth["running"] and fourth["takeovers"] == first["takeovers"] + 3, fourth
    wait_restarted(shop, "watchdog", watchdog)
    shop_serves(shop)

    pids = [p["pid"] for p in shop.status()["processes"]] + [fourth["pid"]]
    shop.kommerce("down")
    assert not PlatformState.path(shop.data_dir).exists()
    still = [pid for pid in pids if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert still == [], f"still running after down: {still}"
