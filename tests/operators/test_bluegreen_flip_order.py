"""An operator killed at any step of a flip leaves the rollout's status behind the cluster,
never ahead of it, and the next operator finishes the flip and dates it from when traffic
moved.

The operator is made to exit right after its Nth API write of a flip
(``KOMMERCE_OPERATOR_TEST_EXIT_AFTER_FLIP_WRITE``), for N = 1, 2, ... until a flip
completes without reaching N: that is every point between two writes. The session's
operator is paused meanwhile so only one operator reconciles the cluster. After each kill a
plain operator is started and the invariant is sampled until the flip has converged:

* a status that does not say ``MovingTraffic`` names the colour the Service selects and
  every VirtualService route sends 100 to;
* during ``MovingTraffic`` (the intent) the traffic objects are on the old or the new colour;
* the flip is recorded once, at the time the traffic objects changed: before the kill when
  the killed operator had already moved them, after the restart otherwise.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess
from kommerce.testbed.ports import wait_until
from operators.bluegreen.handlers import EXIT_AFTER_FLIP_WRITE_CODE, EXIT_AFTER_FLIP_WRITE_ENV
from operators.bluegreen.spec import HISTORY_LIMIT

from .test_bluegreen_operator import _create, _patch, _status, _traffic

pytestmark = pytest.mark.kube

MOVING = "MovingTraffic"
ON = {"blue": ("blue", [100, 0]), "green": ("green", [0, 100])}


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"bgk-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def only_this_operator(kommerce_operator: OperatorProcess) -> Iterator[None]:
    """The session's operator stopped for the test, started again after it."""
    with kommerce_operator.paused():
        yield


def _operator(plane: ControlPlane, monkeypatch: pytest.MonkeyPatch,
              exit_after: int | None) -> OperatorProcess:
    if exit_after is None:
        monkeypatch.delenv(EXIT_AFTER_FLIP_WRITE_ENV, raising=False)
    else:
        monkeypatch.setenv(EXIT_AFTER_FLIP_WRITE_ENV, str(exit_after))
    try:
        return OperatorProcess(plane).start()
    finally:
        monkeypatch.delenv(EXIT_AFTER_FLIP_WRITE_ENV, raising=False)


def _exit_code(operator: OperatorProcess) -> int | None:
    process = getattr(operator, "_process", None)
    assert process is not None
    return process._proc.poll() if process._proc is not None else None


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Sampler:
    """Reads traffic, status, traffic again, and checks that the status is not ahead."""

    def __init__(self, plane: ControlPlane, namespace: str, old: str, new: str) -> None:
        self.plane, self.namespace, self.old, self.new = plane, namespace, old, new
        self.violations: list[str] = []

    def sample(self) -> dict[str, Any]:
        before = _traffic(self.plane, "shop", self.namespace)
        status = _status(self.plane, "shop", self.namespace)
        after = _traffic(self.plane, "shop", self.namespace)
        active, reason = status.get("activeColor"), status.get("reason")
        where = f"status {active}/{status.get('phase')}/{reason}, traffic {before} then {after}"
        if reason == MOVING:
            if active != self.old:
                self.violations.append(f"the intent names the new colour: {where}")
            if any(t[0] not in ON or t[1] not in ([100, 0], [0, 100]) for t in (before, after)):
                self.violations.append(f"traffic neither on blue nor on green: {where}")
        elif active == self.new:
            # Read before `after`: whatever the status says must already be in the cluster.
            if after != ON[self.new]:
                self.violations.append(f"status ahead of the cluster: {where}")
        elif active != self.old or before != ON[self.old]:
            # Read after `before`: traffic that had moved means the intent was written.
            self.violations.append(f"traffic moved without the intent: {where}")
        return status

    def check(self) -> None:
        assert not self.violations, self.violations[:3]


def test_a_killed_operator_never_leaves_status_ahead_of_the_traffic_objects(
        control_plane: ControlPlane, namespace: str, only_this_operator: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    operator = _operator(control_plane, monkeypatch, None)
    try:
        # The idle colour stays at full size, so every flip is ready at once.
        _create(control_plane, namespace, previewReplicas=2, scaleDownDelaySeconds=300)
    finally:
        operator.stop()

    flips, exit_after, writes = 0, 1, []
    while True:
        status = _status(control_plane, "shop", namespace)
        old = status["activeColor"]
        new = "green" if old == "blue" else "blue"
        sampler = Sampler(control_plane, namespace, old, new)
        crashing = _operator(control_plane, monkeypatch, exit_after)
        begun = time.time()
        _patch(control_plane, namespace, "shop", {"activeColor": new})

        def stopped_or_done(crashing: OperatorProcess = crashing,
                            sampler: Sampler = sampler, new: str = new) -> bool:
            status = sampler.sample()
            return bool(sampler.violations) or _exit_code(crashing) is not None or (
                status.get("activeColor") == new and status.get("phase") == "Healthy")
        wait_until(stopped_or_done, timeout=60, what=f"flip write {exit_after} or the flip",
                   interval=0.05)
        sampler.check()
        code = _exit_code(crashing)
        flips += 1
        if code is None:
            # The flip made fewer writes than exit_after: every step has been killed.
            crashing.stop()
            status = sampler.sample()
            sampler.check()
            assert status["history"][0]["toColor"] == new
            assert begun - 1 <= _time(status["history"][0]["time"]) <= time.time() + 1
            break
        killed_at = time.time()
        assert code == EXIT_AFTER_FLIP_WRITE_CODE, crashing.log()[-2000:]
        line = next(line for line in crashing.log().splitlines()
                    if f"exiting after flip write {exit_after} " in line)
        writes.append(line.split("(", 1)[1].split(")", 1)[0])
        sampler.sample()
        sampler.check()
        moved_before_kill = _traffic(control_plane, "shop", namespace) == ON[new]
        time.sleep(1.2)  # the times are to the second: keep "before" and "after" apart
        restarted_at = time.time()
        converging = _operator(control_plane, monkeypatch, None)
        try:
            def converged(sampler: Sampler = sampler, new: str = new) -> bool:
                status = sampler.sample()
                return bool(sampler.violations) or (
                    status.get("activeColor") == new and status.get("phase") == "Healthy"
                    and _traffic(control_plane, "shop", namespace) == ON[new])
            wait_until(converged, timeout=60, interval=0.1,
                       what=f"the flip to {new} finishes after a kill at write {exit_after}")
            for _ in range(10):  # and stays there
                sampler.sample()
            sampler.check()
        finally:
            converging.stop()
        status = _status(control_plane, "shop", namespace)
        record = status["history"][0]
        assert (record["fromColor"], record["toColor"]) == (old, new)
        assert len(status["history"]) == min(flips, HISTORY_LIMIT), status["history"]
        assert status["lastFlipTime"] == record["time"]
        recorded = _time(record["time"])
        if moved_before_kill:
            assert math.floor(begun) <= recorded <= killed_at, (
                f"traffic moved before the kill at write {exit_after} ({writes[-1]}); the "
                f"history says {record['time']}")
        else:
            assert recorded >= math.floor(restarted_at), (
                f"traffic moved after the restart; the history says {record['time']}")
        exit_after += 1

    print("kill points:", "; ".join(writes))
    # Every write of a flip was a kill point: the intent, the three traffic objects, the
    # colours, the preview Service, the CommerceService's hand-over, the final status.
    assert writes[0] == "status: the flip's intent"
    assert writes[-1] == "status: the flip done"
    assert writes.index("Service shop") < writes.index("status: the flip done")
    assert {"DestinationRule shop", "VirtualService shop"} <= set(writes)
    assert len(writes) >= 6, writes
