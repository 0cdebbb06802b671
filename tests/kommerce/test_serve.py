"""``kommerce serve``: the image's default command serves the component the operator names
in ``KOMMERCE_COMPONENT``, and refuses a name it cannot serve with exit status 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kommerce.cli import app
from kommerce.serve_cli import (
    COMPONENT_VARIABLE,
    COMPONENTS,
    UNKNOWN_COMPONENT_EXIT,
    UnknownComponentError,
    resolve_component,
)
from kommerce.testbed.ports import free_port
from operators.commerceservice.spec import Component

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def test_every_component_the_crd_allows_is_one_the_image_can_serve() -> None:
    assert set(COMPONENTS) == {component.value for component in Component}


@pytest.mark.parametrize("package", sorted(path.parent.name
                                           for path in SERVICES_DIR.glob("*/__main__.py")))
def test_each_service_package_with_a_main_module_resolves_to_it(package: str) -> None:
    spec = resolve_component(package)
    assert spec.module == f"services.{package}"


def test_search_is_run_with_its_serve_command_as_kommerce_up_runs_it() -> None:
    # services.search's __main__ is a command group that prints its help without one.
    assert resolve_component("search").args == ("serve",)


def test_component_name_is_read_case_and_space_insensitively() -> None:
    assert resolve_component(" Product\n").name == "product"


@pytest.mark.parametrize("name", ["inventory", "core", "services.product", ""])
def test_unknown_component_is_refused_with_the_list_of_components(name: str) -> None:
    with pytest.raises(UnknownComponentError) as raised:
        resolve_component(name)
    assert "gateway, order, payment, product, review, search, shipping, user" in str(raised.value)


def test_unknown_component_exits_2_with_a_message_naming_it() -> None:
    result = CliRunner().invoke(app, ["serve"], env={COMPONENT_VARIABLE: "inventory"})
    assert result.exit_code == UNKNOWN_COMPONENT_EXIT
    assert "no component 'inventory'" in result.output


def test_missing_component_exits_2_and_says_where_the_name_comes_from() -> None:
    result = CliRunner().invoke(app, ["serve"], env={COMPONENT_VARIABLE: ""})
    assert result.exit_code == UNKNOWN_COMPONENT_EXIT
    assert COMPONENT_VARIABLE in result.output


def test_serve_runs_the_component_from_the_environment_until_sigterm(tmp_path: Path) -> None:
    """The gateway needs no database; its Redis is unreachable on purpose (rate limits fail
    open, and its /ready leaves Redis out), so this starts no server but the one under test."""
    port = free_port()
    env = os.environ | {COMPONENT_VARIABLE: "gateway", "KOMMERCE_HOST": "127.0.0.1",
                        "KOMMERCE_PORT": str(port), "KOMMERCE_REDIS_URL": "redis://127.0.0.1:1/0",
                        "KOMMERCE_ENVIRONMENT": "test"}
    kommerce = Path(sys.executable).with_name("kommerce")
    log = tmp_path / "gateway.log"
    with log.open("w") as output:
        process = subprocess.Popen([str(kommerce), "serve"], env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        health: httpx.Response | None = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, f"gateway never answered: {log.read_text()[-2000:]}"
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        # SIGTERM (what the kubelet sends) reaches uvicorn, which runs the lifespan's
        # shutdown and then re-raises the signal, as ``python -m services.gateway`` does.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
