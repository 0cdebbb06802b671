"""A service process as a container runs it: uvicorn via serve(), JSON logs on stderr,
a clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import orjson

from kommerce.testbed.ports import free_port, port_open, wait_until

PROGRAM = """
from services.core.app import create_service_app, serve
from services.core.settings import ServiceSettings
serve(create_service_app(ServiceSettings(), uses_database=False, uses_redis=False,
                         uses_bus=False))
"""


def test_a_served_service_answers_logs_json_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "KOMMERCE_SERVICE_NAME": "probe", "KOMMERCE_PORT": str(port),
           "KOMMERCE_HOST": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "-c", PROGRAM], env=env,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), timeout=30, what="the service",
                   alive=lambda: None if process.poll() is None else "exited")
        response = httpx.get(f"http://127.0.0.1:{port}/nowhere",
                             headers={"X-Request-Id": "probe-1"})
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert response.status_code == 404
    assert response.headers["x-request-id"] == "probe-1"
    # uvicorn re-raises the signal once it has shut down gracefully.
    assert process.returncode in (0, -signal.SIGTERM)
    lines = [orjson.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "kommerce.access"]
    assert access == [{**access[0], "service": "probe", "request_id": "probe-1",
                       "status": 404, "path": "/nowhere"}]
    assert any(line["message"] == "probe stopping" for line in lines)


ECHO_PEER = """
from fastapi import APIRouter, Request
from services.core.app import create_service_app, serve
from services.core.settings import ServiceSettings
router = APIRouter()

@router.get("/peer")
async def peer(request: Request) -> dict:
    return {"host": request.client.host if request.client else None}

serve(create_service_app(ServiceSettings(), routers=[router], uses_database=False,
                         uses_redis=False, uses_bus=False))
"""


def _peer_seen(trusted: str | None) -> str:
    port = free_port()
    env = {**os.environ, "KOMMERCE_SERVICE_NAME": "probe", "KOMMERCE_PORT": str(port),
           "KOMMERCE_HOST": "127.0.0.1"}
    if trusted is not None:
        env["KOMMERCE_TRUSTED_PROXIES"] = trusted
    process = subprocess.Popen([sys.executable, "-c", ECHO_PEER], env=env,
                               stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), timeout=30, what="the service",
                   alive=lambda: None if process.poll() is None else "exited")
        response = httpx.get(f"http://127.0.0.1:{port}/peer",
                             headers={"X-Forwarded-For": "203.0.113.9"})
    finally:
        process.kill()
        process.wait()
    return str(response.json()["host"])


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    """A client that is not a trusted proxy cannot choose the address it is counted under
    (per-IP rate limits, logs); the default trusts the local sidecar or gateway only."""
    assert _peer_seen(None) == "203.0.113.9"  # from 127.0.0.1, the default trusted proxy
    assert _peer_seen("10.0.0.1") == "127.0.0.1"  # not a trusted proxy: header ignored
