"""``/health`` (the process is alive) and ``/ready`` (its dependencies answer).

Kubernetes restarts a pod whose liveness fails and stops routing to one whose readiness
fails, so ``/health`` checks nothing external (a database outage must not restart every
pod) while ``/ready`` runs each dependency check — database ``SELECT 1``, Redis ``PING``,
the bus — concurrently with a time limit, and answers 503 naming the ones that failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.core.state import AppState

Check = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class ReadinessCheck:
    name: str
    check: Check
    timeout_seconds: float = 2.0


#: What ``/ready`` runs, put by the lifespan (none when the app was built without one).
READINESS_CHECKS = AppState[list[ReadinessCheck]]("readiness_checks")


async def _run(check: ReadinessCheck) -> dict[str, object]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout_seconds):
            await check.check()
    except TimeoutError:
        error: str | None = f"no answer within {check.timeout_seconds:g}s"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    else:
        error = None
    result: dict[str, object] = {
        "status": "ok" if error is None else "failed",
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if error is not None:
        result["error"] = error
    return result


async def readiness(checks: list[ReadinessCheck]) -> tuple[bool, dict[str, object]]:
    results = await asyncio.gather(*(_run(c) for c in checks))
    report = dict(zip((c.name for c in checks), results, strict=True))
    failed = [name for name, result in report.items() if result["status"] != "ok"]
    body: dict[str, object] = {"status": "ready" if not failed else "not_ready",
                               "checks": report}
    if failed:
        body["failed"] = failed
    return not failed, body


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", summary="Liveness: the process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", summary="Readiness: every dependency answers",
                responses={503: {"description": "a dependency failed; see 'failed'"}})
    async def ready(request: Request) -> JSONResponse:
        checks: list[ReadinessCheck] = READINESS_CHECKS.get(request, [])
        ok, body = await readiness(checks)
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
