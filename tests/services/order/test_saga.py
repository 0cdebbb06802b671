"""The checkout saga, pure: worked examples for each rule, then a simulated world in which
hypothesis delays, reorders and duplicates every message, declines steps and lets time run
out — and every saga must still end CONFIRMED with all effects in place or CANCELLED with
none left."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.order.saga import (
    COMPENSATION_ORDER,
    FINAL_STATES,
    CancelRequested,
    Command,
    Compensation,
    CompensationDone,
    CompensationFailed,
    Decision,
    PaymentActionRequired,
    Saga,
    SagaEvent,
    SagaPolicy,
    SagaState,
    Step,
    StepFailed,
    StepSucceeded,
    Tick,
    advance,
    idempotency_key,
    reservation_id,
    start,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = SagaPolicy()
ORDER = "ord-1"


def actions(decision: Decision) -> list[Step | Compensation]:
    return [c.action for c in decision.commands]


def run(events: list[SagaEvent], now: datetime = T0) -> Decision:
    decision = start(ORDER, now)
    for event in events:
        decision = advance(decision.saga, event, now)
    return decision


HAPPY = [StepSucceeded(Step.RESERVE_INVENTORY, "res-1"),
         StepSucceeded(Step.CHARGE_PAYMENT, "pi_1"),
         StepSucceeded(Step.CREATE_SHIPMENT, "shp-1"),
         StepSucceeded(Step.COMMIT_INVENTORY)]


# -- forward path ----------------------------------------------------------------------------


def test_start_reserves_inventory_first() -> None:
    decision = start(ORDER, T0)
    assert decision.saga.state is SagaState.PENDING
    assert actions(decision) == [Step.RESERVE_INVENTORY]
    assert decision.saga.deadline == T0 + POLICY.step_timeout


def test_happy_path_walks_every_state_in_order_to_confirmed() -> None:
    decision = start(ORDER, T0)
    seen = [decision.saga.state]
    sent = actions(decision)
    for event in HAPPY:
        decision = advance(decision.saga, event, T0)
        seen.append(decision.saga.state)
        sent += actions(decision)
    assert seen == [SagaState.PENDING, SagaState.INVENTORY_RESERVED, SagaState.PAID,
                    SagaState.SHIPMENT_CREATED, SagaState.CONFIRMED]
    assert sent == [Step.RESERVE_INVENTORY, Step.CHARGE_PAYMENT, Step.CREATE_SHIPMENT,
                    Step.COMMIT_INVENTORY]
    assert decision.saga.is_settled and decision.saga.reason is None
    assert decision.saga.refs == {"reserve_inventory": "res-1", "charge_payment": "pi_1",
                                  "create_shipment": "shp-1"}


def test_duplicate_reply_changes_nothing_and_sends_nothing() -> None:
    decision = run(HAPPY[:2])
    again = advance(decision.saga, HAPPY[0], T0)
    assert again.changed is False and again.commands == () and again.saga == decision.saga


def test_reply_for_a_step_never_asked_for_is_ignored() -> None:
    decision = start(ORDER, T0)
    again = advance(decision.saga, StepSucceeded(Step.CREATE_SHIPMENT), T0)
    assert again.changed is False and again.saga.state is SagaState.PENDING


def test_version_grows_only_on_change() -> None:
    decision = start(ORDER, T0)
    assert decision.saga.version == 0
    moved = advance(decision.saga, HAPPY[0], T0)
    assert moved.saga.version == 1
    assert advance(moved.saga, HAPPY[0], T0).saga.version == 1


def test_idempotency_key_is_the_same_on_every_attempt() -> None:
    first = Command(ORDER, Step.CHARGE_PAYMENT, attempt=1)
    third = Command(ORDER, Step.CHARGE_PAYMENT, attempt=3)
    assert first.idempotency_key == third.idempotency_key == idempotency_key(
        ORDER, Step.CHARGE_PAYMENT)
    assert idempotency_key(ORDER, Step.CHARGE_PAYMENT) != idempotency_key(
        ORDER, Compensation.REFUND_PAYMENT)
    assert reservation_id(ORDER) == reservation_id(ORDER) != reservation_id("ord-2")


# -- failures and compensation ---------------------------------------------------------------


def test_out_of_stock_cancels_at_once_with_nothing_to_undo() -> None:
    decision = run([StepFailed(Step.RESERVE_INVENTORY, "out of stock")])
    assert decision.saga.state is SagaState.CANCELLED
    assert decision.saga.reason == "out of stock"
    assert decision.commands == ()
    assert decision.saga.is_settled


def test_declined_card_releases_inventory_then_cancels_with_reason() -> None:
    decision = run([HAPPY[0], StepFailed(Step.CHARGE_PAYMENT, "card declined")])
    assert decision.saga.state is SagaState.CANCELLING
    assert actions(decision) == [Compensation.RELEASE_INVENTORY]
    done = advance(decision.saga, CompensationDone(Compensation.RELEASE_INVENTORY), T0)
    assert done.saga.state is SagaState.CANCELLED
    assert done.saga.reason == "card declined"
    assert done.saga.is_settled


def test_shipment_failure_refunds_then_releases_in_reverse_order() -> None:
    decision = run([*HAPPY[:2], StepFailed(Step.CREATE_SHIPMENT, "no carrier")])
    order = actions(decision)
    decision = advance(decision.saga, CompensationDone(Compensation.REFUND_PAYMENT), T0)
    order += actions(decision)
    decision = advance(decision.saga, CompensationDone(Compensation.RELEASE_INVENTORY), T0)
    assert order == [Compensation.REFUND_PAYMENT, Compensation.RELEASE_INVENTORY]
    assert decision.saga.state is SagaState.CANCELLED
    assert decision.saga.reason == "no carrier"


def test_commit_refused_undoes_everything_shipment_first() -> None:
    decision = run([*HAPPY[:3], StepFailed(Step.COMMIT_INVENTORY, "reservation expired")])
    sent = actions(decision)
    for compensation in COMPENSATION_ORDER:
        decision = advance(decision.saga, CompensationDone(compensation), T0)
        sent += actions(decision)
    assert sent == list(COMPENSATION_ORDER)
    assert decision.saga.state is SagaState.CANCELLED


def test_compensation_done_out_of_turn_is_ignored() -> None:
    decision = run([*HAPPY[:2], StepFailed(Step.CREATE_SHIPMENT, "no carrier")])
    again = advance(decision.saga, CompensationDone(Compensation.RELEASE_INVENTORY), T0)
    assert again.changed is False


def test_failed_compensation_is_resent_after_a_back_off_never_abandoned() -> None:
    decision = run([HAPPY[0], StepFailed(Step.CHARGE_PAYMENT, "declined")])
    now = T0
    for attempt in range(1, 12):
        failed = advance(decision.saga, CompensationFailed(Compensation.RELEASE_INVENTORY,
                                                          "product down"), now)
        assert failed.commands == () and failed.saga.resend
        early = advance(failed.saga, Tick(), now)
        assert early.changed is False
        now = failed.saga.deadline
        decision = advance(failed.saga, Tick(), now)
        assert actions(decision) == [Compensation.RELEASE_INVENTORY]
        assert decision.commands[0].attempt == attempt + 1
    assert decision.saga.state is SagaState.CANCELLING
    assert POLICY.compensation_backoff(50) == POLICY.max_backoff


def test_cancel_requested_while_paying_also_refunds_the_charge_in_flight() -> None:
    decision = run([HAPPY[0], CancelRequested("changed my mind")])
    # The charge may have landed without our hearing of it: refund it too, by key.
    assert actions(decision) == [Compensation.REFUND_PAYMENT]
    decision = advance(decision.saga, CompensationDone(Compensation.REFUND_PAYMENT), T0)
    assert actions(decision) == [Compensation.RELEASE_INVENTORY]
    assert decision.saga.reason == "changed my mind"


@pytest.mark.parametrize("prefix", [HAPPY[:3], HAPPY])
def test_cancel_is_refused_once_the_shipment_exists(prefix: list[SagaEvent]) -> None:
    decision = run(prefix)
    again = advance(decision.saga, CancelRequested("too late"), T0)
    assert again.changed is False and again.saga.state is decision.saga.state


def test_cancel_after_cancelled_changes_nothing() -> None:
    decision = run([StepFailed(Step.RESERVE_INVENTORY, "out of stock")])
    again = advance(decision.saga, CancelRequested("again"), T0)
    assert again.changed is False and again.saga.reason == "out of stock"


# -- timeouts --------------------------------------------------------------------------------


def test_silent_step_is_retried_with_the_same_key_then_compensated() -> None:
    decision = start(ORDER, T0)
    now = T0
    assert advance(decision.saga, Tick(), now + timedelta(seconds=1)).changed is False
    for attempt in (2, 3):
        now = decision.saga.deadline
        decision = advance(decision.saga, Tick(), now)
        assert [(c.action, c.attempt) for c in decision.commands] == [
            (Step.RESERVE_INVENTORY, attempt)]
    now = decision.saga.deadline
    decision = advance(decision.saga, Tick(), now)
    # No answer is not "no effect": release by the reservation id we chose.
    assert decision.saga.state is SagaState.CANCELLING
    assert "timed out" in (decision.saga.reason or "")
    assert actions(decision) == [Compensation.RELEASE_INVENTORY]


def test_requires_action_waits_for_the_shopper_then_gives_up() -> None:
    decision = run([HAPPY[0], PaymentActionRequired("pi_3ds")])
    assert decision.saga.action_required
    assert decision.saga.deadline == T0 + POLICY.customer_action_timeout
    assert advance(decision.saga, Tick(), T0 + POLICY.step_timeout * 4).changed is False
    decision = advance(decision.saga, Tick(), decision.saga.deadline)
    assert decision.saga.state is SagaState.CANCELLING
    assert actions(decision) == [Compensation.REFUND_PAYMENT]
    assert "authentication" in (decision.saga.reason or "")


def test_requires_action_then_success_moves_on() -> None:
    decision = run([HAPPY[0], PaymentActionRequired("pi_3ds"), HAPPY[1]])
    assert decision.saga.state is SagaState.PAID and not decision.saga.action_required
    assert decision.saga.refs["charge_payment"] == "pi_3ds"


def test_slow_commit_is_retried_and_never_cancels_the_order() -> None:
    decision = run(HAPPY[:3])
    for _ in range(10):
        decision = advance(decision.saga, Tick(), decision.saga.deadline)
        assert actions(decision) == [Step.COMMIT_INVENTORY]
        assert decision.saga.state is SagaState.SHIPMENT_CREATED
    decision = advance(decision.saga, HAPPY[3], T0)
    assert decision.saga.state is SagaState.CONFIRMED


def test_tick_on_a_settled_saga_is_a_no_op() -> None:
    decision = run(HAPPY)
    assert advance(decision.saga, Tick(), T0 + timedelta(days=365)).changed is False


# -- late replies ----------------------------------------------------------------------------


def test_late_charge_after_refund_found_nothing_is_refunded_again() -> None:
    decision = run([HAPPY[0], CancelRequested("bye")])
    decision = advance(decision.saga, CompensationDone(Compensation.REFUND_PAYMENT), T0)
    decision = advance(decision.saga, CompensationDone(Compensation.RELEASE_INVENTORY), T0)
    assert decision.saga.is_settled
    late = advance(decision.saga, StepSucceeded(Step.CHARGE_PAYMENT, "pi_late"), T0)
    assert late.saga.state is SagaState.CANCELLED  # the order stays cancelled ...
    assert actions(late) == [Compensation.REFUND_PAYMENT]  # ... and the money goes back
    assert not late.saga.is_settled
    done = advance(late.saga, CompensationDone(Compensation.REFUND_PAYMENT), T0)
    assert done.saga.is_settled and done.saga.state is SagaState.CANCELLED


def test_late_success_with_its_compensation_still_queued_sends_nothing_extra() -> None:
    decision = run([HAPPY[0], CancelRequested("bye")])
    late = advance(decision.saga, StepSucceeded(Step.RESERVE_INVENTORY, "res-1"), T0)
    assert late.commands == ()


def test_late_success_of_a_step_that_failed_is_undone() -> None:
    decision = run([HAPPY[0], StepFailed(Step.CHARGE_PAYMENT, "declined")])
    late = advance(decision.saga, StepSucceeded(Step.CHARGE_PAYMENT), T0)
    assert late.commands == ()
    assert late.saga.pending == (Compensation.REFUND_PAYMENT,)


# -- persistence -----------------------------------------------------------------------------


def test_saga_survives_a_round_trip_through_its_stored_form() -> None:
    decision = run([HAPPY[0], PaymentActionRequired("pi_x"), CancelRequested("bye")])
    restored = Saga.from_dict(decision.saga.to_dict())
    assert restored == decision.saga


# -- the simulated world ---------------------------------------------------------------------


@dataclass
class World:
    """Participants that are idempotent per key, a network that delays, reorders and
    duplicates but never loses (the outbox guarantees delivery), and a clock."""

    declines: frozenset[Step]
    three_ds: bool
    tombstones: bool
    now: datetime = T0
    inventory: str = "none"  # none | active | committed | released | expired
    payment: str = "none"  # none | charged | refunded | requires_action | cancelled
    shipment: str = "none"  # none | active | cancelled
    to_participants: list[Command] = field(default_factory=list)
    to_saga: list[SagaEvent] = field(default_factory=list)

    def handle(self, command: Command) -> SagaEvent:
        match command.action:
            case Step.RESERVE_INVENTORY:
                if Step.RESERVE_INVENTORY in self.declines and self.inventory == "none":
                    return StepFailed(Step.RESERVE_INVENTORY, "out of stock")
                if self.inventory == "none" or (self.inventory == "released"
                                                and not self.tombstones):
                    self.inventory = "active"
                if self.inventory in ("active", "committed"):
                    return StepSucceeded(Step.RESERVE_INVENTORY, "res")
                return StepFailed(Step.RESERVE_INVENTORY, "reservation gone")
            case Step.CHARGE_PAYMENT:
                if self.payment == "none":
                    if Step.CHARGE_PAYMENT in self.declines:
                        return StepFailed(Step.CHARGE_PAYMENT, "card declined")
                    self.payment = "requires_action" if self.three_ds else "charged"
                elif self.payment in ("refunded", "cancelled") and not self.tombstones:
                    self.payment = "charged"
                if self.payment == "requires_action":
                    return PaymentActionRequired("pi")
                if self.payment == "charged":
                    return StepSucceeded(Step.CHARGE_PAYMENT, "pi")
                return StepFailed(Step.CHARGE_PAYMENT, "payment cancelled")
            case Step.CREATE_SHIPMENT:
                if Step.CREATE_SHIPMENT in self.declines and self.shipment == "none":
                    return StepFailed(Step.CREATE_SHIPMENT, "no carrier")
                if self.shipment == "none" or (self.shipment == "cancelled"
                                               and not self.tombstones):
                    self.shipment = "active"
                if self.shipment == "active":
                    return StepSucceeded(Step.CREATE_SHIPMENT, "shp")
                return StepFailed(Step.CREATE_SHIPMENT, "shipment cancelled")
            case Step.COMMIT_INVENTORY:
                if Step.COMMIT_INVENTORY in self.declines and self.inventory == "active":
                    self.inventory = "expired"
                if self.inventory == "active":
                    self.inventory = "committed"
                if self.inventory == "committed":
                    return StepSucceeded(Step.COMMIT_INVENTORY)
                return StepFailed(Step.COMMIT_INVENTORY, "reservation expired")
            case Compensation.RELEASE_INVENTORY:
                if self.inventory in ("none", "active"):
                    self.inventory = "released"
                return CompensationDone(Compensation.RELEASE_INVENTORY)
            case Compensation.REFUND_PAYMENT:
                if self.payment == "charged":
                    self.payment = "refunded"
                elif self.payment in ("none", "requires_action"):
                    self.payment = "cancelled"
                return CompensationDone(Compensation.REFUND_PAYMENT)
            case Compensation.CANCEL_SHIPMENT:
                if self.shipment in ("none", "active"):
                    self.shipment = "cancelled"
                return CompensationDone(Compensation.CANCEL_SHIPMENT)
        raise AssertionError(command)


ALLOWED = {
    (SagaState.PENDING, SagaState.INVENTORY_RESERVED),
    (SagaState.INVENTORY_RESERVED, SagaState.PAID),
    (SagaState.PAID, SagaState.SHIPMENT_CREATED),
    (SagaState.SHIPMENT_CREATED, SagaState.CONFIRMED),
    (SagaState.PENDING, SagaState.CANCELLED),
    (SagaState.PENDING, SagaState.CANCELLING),
    (SagaState.INVENTORY_RESERVED, SagaState.CANCELLING),
    (SagaState.PAID, SagaState.CANCELLING),
    (SagaState.SHIPMENT_CREATED, SagaState.CANCELLING),
    (SagaState.CANCELLING, SagaState.CANCELLED),
}

MOVES = st.one_of(
    st.tuples(st.just("deliver_command"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("deliver_reply"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("tick"), st.integers(0, 3_600), st.just(False)),
    st.tuples(st.just("cancel"), st.just(0), st.just(False)),
)


def _apply(world: World, saga: Saga, event: SagaEvent) -> Saga:
    decision = advance(saga, event, world.now)
    after = decision.saga
    if decision.changed:
        assert after.version == saga.version + 1
    else:
        assert after == saga and decision.commands == ()
    if after.state != saga.state:
        assert (saga.state, after.state) in ALLOWED
    if saga.state in FINAL_STATES:
        assert after.state is saga.state
    assert (after.reason is not None) == (after.state in (SagaState.CANCELLING,
                                                          SagaState.CANCELLED))
    for command in decision.commands:
        if after.state in (SagaState.CANCELLING, SagaState.CANCELLED):
            assert isinstance(command.action, Compensation)
        assert command.idempotency_key == idempotency_key(ORDER, command.action)
    assert Saga.from_dict(after.to_dict()) == after
    world.to_participants.extend(decision.commands)
    return after


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declines=st.frozensets(st.sampled_from(list(Step))), three_ds=st.booleans(),
       tombstones=st.booleans(), moves=st.lists(MOVES, max_size=60))
def test_every_saga_ends_confirmed_with_all_effects_or_cancelled_with_none(
        declines: frozenset[Step], three_ds: bool, tombstones: bool,
        moves: list[tuple[str, int, bool]]) -> None:
    world = World(declines=declines, three_ds=three_ds, tombstones=tombstones)
    decision = start(ORDER, world.now)
    saga = decision.saga
    world.to_participants.extend(decision.commands)

    for kind, number, duplicate in moves:
        if kind == "deliver_command" and world.to_participants:
            index = number % len(world.to_participants)
            command = world.to_participants[index]
            if not duplicate:
                world.to_participants.pop(index)
            world.to_saga.append(world.handle(command))
        elif kind == "deliver_reply" and world.to_saga:
            index = number % len(world.to_saga)
            event = world.to_saga[index]
            if not duplicate:
                world.to_saga.pop(index)
            saga = _apply(world, saga, event)
        elif kind == "tick":
            world.now += timedelta(seconds=number)
            saga = _apply(world, saga, Tick())
        elif kind == "cancel":
            saga = _apply(world, saga, CancelRequested("shopper cancelled"))

    # Drain: the network delivers everything in order, time moves on, until it settles.
    for _ in range(500):
        if saga.is_settled and not world.to_participants and not world.to_saga:
            break
        while world.to_participants:
            world.to_saga.append(world.handle(world.to_participants.pop(0)))
        while world.to_saga:
            saga = _apply(world, saga, world.to_saga.pop(0))
        if not saga.is_settled and not world.to_participants:
            world.now = saga.deadline or world.now
            saga = _apply(world, saga, Tick())
    else:
        pytest.fail(f"saga never settled: {saga}")

    if saga.state is SagaState.CONFIRMED:
        assert (world.inventory, world.payment, world.shipment) == (
            "committed", "charged", "active")
    else:
        assert saga.state is SagaState.CANCELLED and saga.reason
        assert world.inventory in ("none", "released", "expired")
        assert world.payment in ("none", "refunded", "cancelled")
        assert world.shipment in ("none", "cancelled")
