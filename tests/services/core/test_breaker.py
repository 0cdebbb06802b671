"""The breaker's state machine, driven by a fake clock."""

from __future__ import annotations

from services.core.breaker import BreakerPolicy, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: FakeClock, **policy: float) -> CircuitBreaker:
    return CircuitBreaker("payment", BreakerPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def call(b: CircuitBreaker, ok: bool) -> bool:
    if not b.try_acquire():
        return False
    if ok:
        b.record_success()
    else:
        b.record_failure()
    return True


def test_defaults_are_the_reference_numbers() -> None:
    policy = BreakerPolicy()

    assert (policy.timeout_seconds, policy.error_threshold_percentage,
            policy.reset_timeout_seconds, policy.rolling_window_seconds,
            policy.rolling_window_buckets) == (3.0, 50.0, 30.0, 10.0, 10)


def test_opens_when_errors_reach_the_threshold_percentage() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=4)
    for ok in (True, True, False):
        call(b, ok)
    assert b.state is BreakerState.CLOSED

    call(b, False)  # 2 of 4 = 50 %

    assert b.state is BreakerState.OPEN


def test_stays_closed_below_the_volume_threshold() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=5)
    for _ in range(4):
        call(b, False)

    assert b.state is BreakerState.CLOSED


def test_an_open_breaker_rejects_calls_until_the_reset_timeout() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=1)
    call(b, False)

    clock.advance(29.9)
    assert not b.try_acquire()
    assert 0 < b.retry_after() <= 0.1 + 1e-9

    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_admits_one_trial_and_a_success_closes_it() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=1)
    call(b, False)
    clock.advance(30)

    assert b.try_acquire()
    assert not b.try_acquire()  # only one trial at a time
    b.record_success()

    assert b.state is BreakerState.CLOSED
    assert b.window().total == 0  # a fresh window after closing


def test_a_failed_trial_opens_it_again_for_a_full_reset_timeout() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=1)
    call(b, False)
    clock.advance(30)

    assert b.try_acquire()
    b.record_failure()

    assert b.state is BreakerState.OPEN
    clock.advance(29)
    assert b.state is BreakerState.OPEN
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN


def test_failures_older_than_the_rolling_window_are_forgotten() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=4)
    for _ in range(3):
        call(b, False)

    clock.advance(10.0)  # every bucket that held those failures has rolled out
    call(b, False)

    assert b.window().failures == 1
    assert b.state is BreakerState.CLOSED


def test_the_window_rolls_bucket_by_bucket() -> None:
    clock = FakeClock(0.0)
    b = breaker(clock, volume_threshold=100)
    call(b, False)           # bucket 0
    clock.advance(5.0)
    call(b, False)           # bucket 5
    clock.advance(5.0)       # now bucket 10: bucket 0 expired, bucket 5 kept

    assert b.window().failures == 1


def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=1)
    call(b, False)
    clock.advance(30)

    assert b.try_acquire()
    b.release()

    assert b.try_acquire()


def test_a_new_policy_applies_without_losing_state() -> None:
    clock = FakeClock()
    b = breaker(clock, volume_threshold=1)
    call(b, False)

    b.policy = BreakerPolicy(reset_timeout_seconds=5, volume_threshold=1)
    clock.advance(5)

    assert b.state is BreakerState.HALF_OPEN


def test_transitions_are_reported() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str]] = []
    b = CircuitBreaker("payment", BreakerPolicy(volume_threshold=1), clock=clock,
                       on_transition=lambda _, old, new: seen.append((old.value, new.value)))
    call(b, False)
    clock.advance(30)
    call(b, True)

    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_policy_reads_camel_case_keys_from_the_configmap() -> None:
    policy = BreakerPolicy.model_validate(
        {"timeoutSeconds": 1.5, "errorThresholdPercentage": 25, "rollingWindowBuckets": 5})

    assert (policy.timeout_seconds, policy.error_threshold_percentage,
            policy.rolling_window_buckets) == (1.5, 25, 5)
