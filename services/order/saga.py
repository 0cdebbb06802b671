"""The checkout saga as a pure state machine: no I/O, no clock, no randomness.

The orchestrator (order service) persists a :class:`Saga`, feeds it what happened
(:data:`SagaEvent`) together with the current time, stores the returned saga and sends the
returned :class:`Command` s through the outbox in the same transaction. Everything that can
go wrong in a distributed checkout — lost replies, duplicates, replies arriving after a
timeout, a restart between two steps — is decided here, where it can be tested
exhaustively without a broker or a database.

Forward path::

    PENDING --reserve--> INVENTORY_RESERVED --charge--> PAID --ship--> SHIPMENT_CREATED
            --commit stock--> CONFIRMED

On a failure, a timeout or a cancellation the saga enters CANCELLING and undoes, in
reverse order, every step it *started* (cancel shipment, refund payment, release
inventory), then ends CANCELLED with the reason. A step that timed out is compensated as
well, because "no answer" does not mean "no effect"; a step that failed explicitly is not,
because the participant told us it changed nothing.

Every participant call is keyed by :attr:`Command.idempotency_key`, which depends only on
the order and the action, never on the attempt: a retry after a lost reply therefore
repeats the first call instead of making a second reservation, charge or shipment, and a
compensation can name its target even when the forward reply never arrived.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class SagaState(StrEnum):
    """Where an order's checkout stands; also the order status shown to the shopper."""

    PENDING = "PENDING"
    INVENTORY_RESERVED = "INVENTORY_RESERVED"
    PAID = "PAID"
    SHIPMENT_CREATED = "SHIPMENT_CREATED"
    CONFIRMED = "CONFIRMED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class Step(StrEnum):
    """A forward action asked of a participant."""

    RESERVE_INVENTORY = "reserve_inventory"
    CHARGE_PAYMENT = "charge_payment"
    CREATE_SHIPMENT = "create_shipment"
    COMMIT_INVENTORY = "commit_inventory"


class Compensation(StrEnum):
    """An action that undoes a forward step."""

    CANCEL_SHIPMENT = "cancel_shipment"
    REFUND_PAYMENT = "refund_payment"
    RELEASE_INVENTORY = "release_inventory"


Action = Step | Compensation

FINAL_STATES = frozenset({SagaState.CONFIRMED, SagaState.CANCELLED})

#: The step each forward state waits for.
AWAITED_STEP: Mapping[SagaState, Step] = {
    SagaState.PENDING: Step.RESERVE_INVENTORY,
    SagaState.INVENTORY_RESERVED: Step.CHARGE_PAYMENT,
    SagaState.PAID: Step.CREATE_SHIPMENT,
    SagaState.SHIPMENT_CREATED: Step.COMMIT_INVENTORY,
}

#: Where a forward state goes when its awaited step succeeds.
NEXT_STATE: Mapping[SagaState, SagaState] = {
    SagaState.PENDING: SagaState.INVENTORY_RESERVED,
    SagaState.INVENTORY_RESERVED: SagaState.PAID,
    SagaState.PAID: SagaState.SHIPMENT_CREATED,
    SagaState.SHIPMENT_CREATED: SagaState.CONFIRMED,
}

#: What undoes each step. Committing stock has no compensation of its own: it is the last
#: step, and releasing the reservation is the best that can be done after it.
COMPENSATION_FOR: Mapping[Step, Compensation] = {
    Step.CREATE_SHIPMENT: Compensation.CANCEL_SHIPMENT,
    Step.CHARGE_PAYMENT: Compensation.REFUND_PAYMENT,
    Step.RESERVE_INVENTORY: Compensation.RELEASE_INVENTORY,
}

#: Compensations run in this order: the reverse of the forward steps.
COMPENSATION_ORDER: tuple[Compensation, ...] = (
    Compensation.CANCEL_SHIPMENT,
    Compensation.REFUND_PAYMENT,
    Compensation.RELEASE_INVENTORY,
)

_SAGA_NAMESPACE = uuid.UUID("5b1f3c52-8c1e-4a55-9a43-0c3f5f7a9e21")


def idempotency_key(order_id: str, action: Action) -> str:
    """The key a participant sees for ``action`` on ``order_id`` — the same on every retry."""
    return f"order-{order_id}-{action.value}"


def reservation_id(order_id: str) -> uuid.UUID:
    """The inventory reservation id for an order, chosen by us so that a retried reserve
    returns the first reservation and a release can name it without a reply."""
    return uuid.uuid5(_SAGA_NAMESPACE, f"reservation:{order_id}")


@dataclass(frozen=True, slots=True)
class SagaPolicy:
    """How long to wait and how often to retry. Defaults suit a local checkout."""

    step_timeout: timedelta = timedelta(seconds=30)
    #: Forward steps are retried (with the same idempotency key) this many times in all
    #: before the saga gives up and compensates.
    max_attempts: int = 3
    #: How long a shopper has to finish 3-D Secure before the order is cancelled.
    customer_action_timeout: timedelta = timedelta(minutes=15)
    #: Compensations are never abandoned — a charged card on a cancelled order is worse
    #: than a saga that keeps trying — but back off up to this cap between attempts.
    compensation_retry_delay: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(minutes=5)

    def compensation_backoff(self, attempt: int) -> timedelta:
        """Delay before the next attempt after ``attempt`` failed ones (exponential, capped)."""
        delay = self.compensation_retry_delay * (2 ** min(max(attempt - 1, 0), 20))
        return min(delay, self.max_backoff)


# -- the saga's own charge -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    """The one payment that counts for an order: the charge the saga asked the payment
    service for (the order's total in its currency) and the ids the answer gave it.

    Anything the payment service later says about a payment is applied only when it names
    this charge (:func:`charge_mismatch`): its payment id, its intent, its amount and
    currency, its order. Before the saga recorded it, nothing is applied; the charge step's
    own retry (same idempotency key) then gets the payment's answer instead.
    """

    payment_id: str
    intent_id: str
    amount: int
    currency: str

    def to_dict(self) -> dict[str, Any]:
        return {"payment_id": self.payment_id, "intent_id": self.intent_id,
                "amount": self.amount, "currency": self.currency}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Charge:
        return cls(payment_id=str(data["payment_id"]), intent_id=str(data["intent_id"]),
                   amount=int(data["amount"]), currency=str(data["currency"]))


@dataclass(frozen=True, slots=True)
class PaymentReport:
    """What a payment event on the bus claims about a payment, as it claims it: each field
    may be missing or of the wrong type in a malformed or forged event."""

    order_id: object
    payment_id: object
    intent_id: object
    amount: object
    currency: object

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> PaymentReport:
        return cls(order_id=payload.get("order_id"), payment_id=payload.get("payment_id"),
                   intent_id=payload.get("intent_id"), amount=payload.get("amount"),
                   currency=payload.get("currency"))


class Mismatch(StrEnum):
    """Why a reported payment is not the saga's charge (the alarm's ``reason`` label)."""

    ORDER = "order_mismatch"
    NO_CHARGE = "no_charge_on_record"
    PAYMENT = "payment_mismatch"
    INTENT = "intent_mismatch"
    AMOUNT = "amount_mismatch"
    CURRENCY = "currency_mismatch"
    #: The event names no order of ours (no saga under that id).
    UNKNOWN_ORDER = "unknown_order"
    #: The payload is no payment event (a field missing or of the wrong type).
    MALFORMED = "malformed_event"
    #: The payment service answered the saga's own charge or refund call with another
    #: payment, order, amount or currency than asked for.
    ANSWER = "answer_mismatch"


def charge_mismatch(charge: Charge | None, order_id: str,
                    report: PaymentReport) -> Mismatch | None:
    """None when ``report`` is about the saga's own ``charge`` for ``order_id``; otherwise
    the first thing that differs. Every field must match exactly, types included (an
    amount of ``"16699"`` or ``16699.0`` is not the charge's 16699)."""
    if report.order_id != order_id:
        return Mismatch.ORDER
    if charge is None:
        return Mismatch.NO_CHARGE
    if report.payment_id != charge.payment_id:
        return Mismatch.PAYMENT
    if report.intent_id != charge.intent_id:
        return Mismatch.INTENT
    if type(report.amount) is not int or report.amount != charge.amount:
        return Mismatch.AMOUNT
    if report.currency != charge.currency:
        return Mismatch.CURRENCY
    return None


# -- events: what the orchestrator tells the saga --------------------------------------------


@dataclass(frozen=True, slots=True)
class StepSucceeded:
    """A participant reports that ``step`` took effect; ``ref`` names what it made
    (reservation, payment intent, shipment) for the timeline and for compensation."""

    step: Step
    ref: str | None = None
    #: With the charge step: the charge made (recorded as the saga's own).
    charge: Charge | None = None


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A participant reports that ``step`` was refused *and changed nothing* (out of stock,
    card declined). Transport errors are not failures: they become retries via timeouts."""

    step: Step
    reason: str
    #: With the charge step: the declined charge, recorded as the saga's own so that the
    #: payment service's news of the same decline is recognised, not alarmed.
    charge: Charge | None = None


@dataclass(frozen=True, slots=True)
class PaymentActionRequired:
    """The charge needs the shopper (3-D Secure); the saga waits longer, then gives up.
    ``charge`` is the charge waiting for them, recorded as the saga's own: the only one
    whose later success (:class:`PaymentSettled`) moves the order on."""

    ref: str | None = None
    charge: Charge | None = None


@dataclass(frozen=True, slots=True)
class PaymentSettled:
    """The payment service's later news of a charge (``payment.succeeded`` or
    ``payment.failed`` on the bus, e.g. after 3-D Secure): applied as the charge step's
    success or failure only when ``report`` names the saga's own charge; anything else is
    refused (:attr:`Decision.rejected`) and changes nothing."""

    report: PaymentReport
    succeeded: bool
    reason: str = "payment declined"


@dataclass(frozen=True, slots=True)
class CompensationDone:
    """A participant reports ``compensation`` done, or nothing to undo."""

    compensation: Compensation


@dataclass(frozen=True, slots=True)
class CompensationFailed:
    """A compensation could not be done now; it will be retried after a back-off."""

    compensation: Compensation
    reason: str


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The shopper or an operator cancels an order that is not yet confirmed."""

    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: lets the saga notice a deadline without a clock of its own."""


SagaEvent = (StepSucceeded | StepFailed | PaymentActionRequired | PaymentSettled
             | CompensationDone | CompensationFailed | CancelRequested | Tick)


# -- the saga ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A request to a participant; send it through the outbox with its idempotency key."""

    order_id: str
    action: Action
    attempt: int = 1
    #: The saga's recorded charge, handed to the participant when the command is carried
    #: out (a refund undoes this charge and no other); not part of the sent command.
    charge: Charge | None = field(default=None, compare=False)

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.order_id, self.action)


@dataclass(frozen=True, slots=True)
class Saga:
    """The persisted state of one order's checkout.

    ``current`` is the action whose answer the saga waits for (None when settled, or while
    waiting out a compensation back-off with ``resend`` set). ``pending`` lists the
    compensations still to run after ``current``.
    """

    order_id: str
    state: SagaState = SagaState.PENDING
    reason: str | None = None
    current: Action | None = None
    attempt: int = 0
    deadline: datetime | None = None
    #: True while a compensation waits for its back-off to elapse before being resent.
    resend: bool = False
    started: tuple[Step, ...] = ()
    failed_step: Step | None = None
    pending: tuple[Compensation, ...] = ()
    compensated: tuple[Compensation, ...] = ()
    refs: Mapping[str, str] = field(default_factory=dict)
    action_required: bool = False
    #: The saga's own charge, once the payment service answered the charge step.
    charge: Charge | None = None
    version: int = 0

    @property
    def is_final(self) -> bool:
        """The order's outcome is decided (CONFIRMED or CANCELLED)."""
        return self.state in FINAL_STATES

    @property
    def is_settled(self) -> bool:
        """Decided and nothing left to undo: the orchestrator can stop watching it."""
        return self.is_final and self.current is None and not self.pending

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the saga table; :meth:`from_dict` reads it back."""
        return {
            "order_id": self.order_id,
            "state": self.state.value,
            "reason": self.reason,
            "current": self.current.value if self.current else None,
            "attempt": self.attempt,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "resend": self.resend,
            "started": [s.value for s in self.started],
            "failed_step": self.failed_step.value if self.failed_step else None,
            "pending": [c.value for c in self.pending],
            "compensated": [c.value for c in self.compensated],
            "refs": dict(self.refs),
            "action_required": self.action_required,
            "charge": self.charge.to_dict() if self.charge else None,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Saga:
        return cls(
            order_id=data["order_id"],
            state=SagaState(data["state"]),
            reason=data.get("reason"),
            current=_action(data["current"]) if data.get("current") else None,
            attempt=int(data.get("attempt", 0)),
            deadline=datetime.fromisoformat(data["deadline"]) if data.get("deadline") else None,
            resend=bool(data.get("resend", False)),
            started=tuple(Step(s) for s in data.get("started", ())),
            failed_step=Step(data["failed_step"]) if data.get("failed_step") else None,
            pending=tuple(Compensation(c) for c in data.get("pending", ())),
            compensated=tuple(Compensation(c) for c in data.get("compensated", ())),
            refs=dict(data.get("refs", {})),
            action_required=bool(data.get("action_required", False)),
            charge=Charge.from_dict(data["charge"]) if data.get("charge") else None,
            version=int(data.get("version", 0)),
        )


def _action(value: str) -> Action:
    try:
        return Step(value)
    except ValueError:
        return Compensation(value)


@dataclass(frozen=True, slots=True)
class Decision:
    """The saga after an event, and what to send. ``changed`` is False for an event that
    was a duplicate, came too late to matter or was refused, so the orchestrator can skip
    the write."""

    saga: Saga
    commands: tuple[Command, ...] = ()
    changed: bool = True
    #: Set when the event claimed a payment that is not the saga's charge: nothing was
    #: applied, and the orchestrator records and alarms it.
    rejected: Mismatch | None = None


def start(order_id: str, now: datetime, policy: SagaPolicy | None = None) -> Decision:
    """A new saga for a freshly created order: reserve its stock first."""
    policy = policy or SagaPolicy()
    saga = Saga(order_id=order_id)
    return _send_forward(saga, Step.RESERVE_INVENTORY, now, policy, attempt=1)


def advance(saga: Saga, event: SagaEvent, now: datetime,
            policy: SagaPolicy | None = None) -> Decision:
    """The one transition function: ``saga`` after ``event`` at time ``now``."""
    policy = policy or SagaPolicy()
    match event:
        case StepSucceeded():
            decision = _on_step_succeeded(saga, event, now, policy)
        case StepFailed():
            decision = _on_step_failed(saga, event, now, policy)
        case PaymentActionRequired():
            decision = _on_action_required(saga, event, now, policy)
        case PaymentSettled():
            decision = _on_payment_settled(saga, event, now, policy)
        case CompensationDone():
            decision = _on_compensation_done(saga, event, now, policy)
        case CompensationFailed():
            decision = _on_compensation_failed(saga, event, now, policy)
        case CancelRequested():
            decision = _on_cancel(saga, event, now, policy)
        case Tick():
            decision = _on_tick(saga, now, policy)
        case _:  # pragma: no cover - the type checker rules this out
            raise TypeError(f"not a saga event: {event!r}")
    if decision.changed:
        return replace(decision, saga=replace(decision.saga, version=saga.version + 1))
    return decision


# -- forward steps ---------------------------------------------------------------------------


def _send_forward(saga: Saga, step: Step, now: datetime, policy: SagaPolicy,
                  attempt: int) -> Decision:
    started = saga.started if step in saga.started else (*saga.started, step)
    saga = replace(saga, current=step, attempt=attempt, deadline=now + policy.step_timeout,
                   started=started, resend=False)
    return Decision(saga, (Command(saga.order_id, step, attempt),))


def _with_charge(saga: Saga, charge: Charge | None) -> Saga | None:
    """``saga`` with the charge step's answer recorded as its own charge; None when it
    already holds another (the first charge recorded is the one that counts)."""
    if charge is None or saga.charge == charge:
        return saga
    if saga.charge is not None:
        return None
    return replace(saga, charge=charge)


def _on_step_succeeded(saga: Saga, event: StepSucceeded, now: datetime,
                       policy: SagaPolicy) -> Decision:
    before = saga
    recorded = _with_charge(saga, event.charge)
    if recorded is None:
        return Decision(saga, changed=False, rejected=Mismatch.PAYMENT)
    saga = recorded
    refs = dict(saga.refs)
    if event.ref is not None:
        refs.setdefault(event.step.value, event.ref)
    if saga.state in AWAITED_STEP and AWAITED_STEP[saga.state] == event.step:
        state = NEXT_STATE[saga.state]
        saga = replace(saga, state=state, refs=refs, action_required=False)
        if state in AWAITED_STEP:
            return _send_forward(saga, AWAITED_STEP[state], now, policy, attempt=1)
        return Decision(replace(saga, current=None, attempt=0, deadline=None))
    if saga.state in (SagaState.CANCELLING, SagaState.CANCELLED):
        return _late_success(saga, event.step, refs, now, policy, before=before)
    # A duplicate reply for a step already passed, or a reply for a step never asked for.
    return Decision(before, changed=False)


def _late_success(saga: Saga, step: Step, refs: dict[str, str], now: datetime,
                  policy: SagaPolicy, *, before: Saga) -> Decision:
    """A step took effect after the saga gave up on it. If its compensation is still to
    come, that will undo it; if the compensation already ran (it found nothing to undo),
    the effect is new and must be undone again, even on a CANCELLED order. ``before`` is
    the saga as it was, to tell whether anything (a ref, the charge) was learnt."""
    compensation = COMPENSATION_FOR.get(step)
    if compensation is None or step not in saga.started:
        return Decision(before, changed=False)
    if compensation == saga.current or compensation in saga.pending:
        saga = replace(saga, refs=refs)
        changed = saga != before
        return Decision(saga if changed else before, changed=changed)
    compensated = tuple(c for c in saga.compensated if c != compensation)
    saga = replace(saga, refs=refs, compensated=compensated)
    if saga.current is None:
        return _send_compensation(saga, compensation, now, policy, attempt=1)
    return Decision(replace(saga, pending=_in_order((*saga.pending, compensation))))


def _on_step_failed(saga: Saga, event: StepFailed, now: datetime,
                    policy: SagaPolicy) -> Decision:
    if AWAITED_STEP.get(saga.state) != event.step:
        return Decision(saga, changed=False)
    recorded = _with_charge(saga, event.charge)
    if recorded is None:
        return Decision(saga, changed=False, rejected=Mismatch.PAYMENT)
    return _begin_cancelling(recorded, event.reason, now, policy, failed_step=event.step)


def _on_action_required(saga: Saga, event: PaymentActionRequired, now: datetime,
                        policy: SagaPolicy) -> Decision:
    if saga.state != SagaState.INVENTORY_RESERVED or saga.action_required:
        return Decision(saga, changed=False)
    recorded = _with_charge(saga, event.charge)
    if recorded is None:
        return Decision(saga, changed=False, rejected=Mismatch.PAYMENT)
    refs = dict(recorded.refs)
    if event.ref is not None:
        refs.setdefault(Step.CHARGE_PAYMENT.value, event.ref)
    return Decision(replace(recorded, action_required=True, refs=refs,
                            deadline=now + policy.customer_action_timeout))


def _on_payment_settled(saga: Saga, event: PaymentSettled, now: datetime,
                        policy: SagaPolicy) -> Decision:
    """News of a payment from the bus: the saga's own charge settles the charge step (a
    duplicate of a reply already applied changes nothing); any other payment is refused."""
    mismatch = charge_mismatch(saga.charge, saga.order_id, event.report)
    if (mismatch is Mismatch.NO_CHARGE and not event.succeeded
            and saga.failed_step is Step.CHARGE_PAYMENT):
        # The decline the charge step already heard, from a provider that named no intent
        # for it: nothing to apply, and nothing wrong either.
        return Decision(saga, changed=False)
    if mismatch is not None:
        return Decision(saga, changed=False, rejected=mismatch)
    assert saga.charge is not None  # charge_mismatch says so
    if event.succeeded:
        return _on_step_succeeded(
            saga, StepSucceeded(Step.CHARGE_PAYMENT, saga.charge.payment_id), now, policy)
    return _on_step_failed(saga, StepFailed(Step.CHARGE_PAYMENT, event.reason), now, policy)


#: States a shopper can still cancel from. Once the shipment exists the order is as good as
#: confirmed; undoing it is a return, not a checkout compensation.
CANCELLABLE_STATES = frozenset({SagaState.PENDING, SagaState.INVENTORY_RESERVED,
                                SagaState.PAID})


def _on_cancel(saga: Saga, event: CancelRequested, now: datetime,
               policy: SagaPolicy) -> Decision:
    if saga.state not in CANCELLABLE_STATES:
        return Decision(saga, changed=False)
    return _begin_cancelling(saga, event.reason, now, policy, failed_step=None)


def _on_tick(saga: Saga, now: datetime, policy: SagaPolicy) -> Decision:
    if saga.deadline is None or now < saga.deadline or saga.current is None:
        return Decision(saga, changed=False)
    if isinstance(saga.current, Compensation):
        # No answer, or the back-off after a failure is over: resend, waiting longer each time.
        return _send_compensation(saga, saga.current, now, policy, attempt=saga.attempt + 1)
    step = saga.current
    if saga.action_required:
        return _begin_cancelling(saga, "payment authentication was not completed in time",
                                 now, policy, failed_step=None)
    if step == Step.COMMIT_INVENTORY:
        # The shopper is charged and the parcel exists: giving up now would cancel a good
        # order over a slow reply, and a commit that did land cannot be released. Keep
        # asking (the commit is idempotent); only an explicit refusal cancels.
        saga = replace(saga, attempt=saga.attempt + 1)
        return Decision(replace(saga, deadline=now + max(
                            policy.step_timeout, policy.compensation_backoff(saga.attempt))),
                        (Command(saga.order_id, step, saga.attempt),))
    if saga.attempt < policy.max_attempts:
        return _send_forward(saga, step, now, policy, attempt=saga.attempt + 1)
    return _begin_cancelling(saga, f"{step.value} timed out after {saga.attempt} attempts",
                             now, policy, failed_step=None)


# -- compensation ----------------------------------------------------------------------------


def _in_order(compensations: tuple[Compensation, ...]) -> tuple[Compensation, ...]:
    return tuple(c for c in COMPENSATION_ORDER if c in compensations)


def _begin_cancelling(saga: Saga, reason: str, now: datetime, policy: SagaPolicy,
                      failed_step: Step | None) -> Decision:
    """Plan the undo of every started step except one that failed cleanly."""
    to_undo = _in_order(tuple(COMPENSATION_FOR[s] for s in saga.started
                              if s != failed_step and s in COMPENSATION_FOR))
    saga = replace(saga, state=SagaState.CANCELLING, reason=reason, failed_step=failed_step,
                   action_required=False, current=None, attempt=0, deadline=None,
                   resend=False, pending=to_undo)
    return _next_compensation(saga, now, policy)


def _next_compensation(saga: Saga, now: datetime, policy: SagaPolicy) -> Decision:
    if not saga.pending:
        # Also the end of undoing a late effect: the order stays cancelled.
        return Decision(replace(saga, state=SagaState.CANCELLED, current=None, attempt=0,
                                deadline=None, resend=False))
    head, *rest = saga.pending
    return _send_compensation(replace(saga, pending=tuple(rest)), head, now, policy, attempt=1)


def _send_compensation(saga: Saga, compensation: Compensation, now: datetime,
                       policy: SagaPolicy, attempt: int) -> Decision:
    timeout = max(policy.step_timeout, policy.compensation_backoff(attempt))
    saga = replace(saga, current=compensation, attempt=attempt, deadline=now + timeout,
                   resend=False)
    return Decision(saga, (Command(saga.order_id, compensation, attempt),))


def _on_compensation_done(saga: Saga, event: CompensationDone, now: datetime,
                          policy: SagaPolicy) -> Decision:
    if event.compensation != saga.current:
        return Decision(saga, changed=False)
    saga = replace(saga, compensated=(*saga.compensated, event.compensation), current=None,
                   attempt=0, deadline=None, resend=False)
    return _next_compensation(saga, now, policy)


def _on_compensation_failed(saga: Saga, event: CompensationFailed, now: datetime,
                            policy: SagaPolicy) -> Decision:
    if event.compensation != saga.current or saga.resend:
        return Decision(saga, changed=False)
    return Decision(replace(saga, resend=True,
                            deadline=now + policy.compensation_backoff(saga.attempt)))
