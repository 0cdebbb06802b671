"""Runs checkout sagas: persists each step, sends commands through the outbox, executes
them, and notices deadlines.

The pure decisions live in :mod:`services.order.saga`; this module only does the I/O
around them, always in one transaction per step:

1. the saga's new state, the order's status, a timeline row and the next commands (as
   ``order.saga_command`` events in the outbox) commit together — so a crash can lose
   neither a state change nor the command that follows from it;
2. the order service consumes its own commands (idempotently, per event id), locks the
   saga row, asks the participant, and applies the reply as in 1;
3. a timer loop feeds :class:`~services.order.saga.Tick` to every saga past its deadline, so
   a command lost with a crashed consumer or a broker restart is sent again, and a step
   that never answers ends in compensation.

A restarted service therefore resumes every saga from the database and the bus: unsent
commands are still in the outbox, unhandled ones still on the bus, and anything else is
caught by its deadline.

The bus is the durable path, not the fast one: the core's consumer takes one event at a
time, so a saga whose every step waited its turn on the bus (relay, broker, one consumer
per process, a participant call each) would move at a few orders a second. So a command is
also run *inline* — in a task of this process the moment its transaction commits. Both
paths run :meth:`Orchestrator.run_command`, which locks the saga row and does nothing
unless the saga still awaits exactly that command; so whichever gets there first does the
work and the other finds the saga moved on (arriving while the first is still at it, it
waits on the row lock). When the bus delivers a command this process already ran inline,
the consumer asks :meth:`Orchestrator.settled` first and acknowledges it without touching
the database. An inline run that fails or is lost with a crash changes nothing, so the bus
delivery — or the deadline — does the step instead. Inline runs are bounded
(``inline_concurrency`` at once, a queue behind them); beyond that the bus carries the
rest.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from asyncpg import Connection
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from kommerce.contracts.events.base import InvalidPayload
from kommerce.contracts.events.order import SAGA_COMMAND, SagaCommand
from kommerce.contracts.events.payment import PAYMENT_SUCCEEDED, PaymentEvent
from services.core.db import Database
from services.core.events import outbox
from services.core.events.envelope import EventEnvelope
from services.core.metrics import counter
from services.order import events, repository
from services.order.metrics import ORDERS_TOTAL
from services.order.models import Order
from services.order.repository import RefusedPayment, SagaOrder
from services.order.saga import (
    Charge,
    Command,
    Decision,
    Mismatch,
    PaymentReport,
    PaymentSettled,
    Saga,
    SagaEvent,
    SagaPolicy,
    SagaState,
    Step,
    StepSucceeded,
    Tick,
    advance,
    charge_mismatch,
    start,
)

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

#: The alarm: every payment event or answer refused because it was not the order's own
#: charge (a forged or mistaken event, a second payment, another amount or currency).
PAYMENT_EVENTS_REJECTED = counter(
    "payment_events_rejected_total",
    "Payment events and answers refused because they were not the order's own charge",
    ["reason"])

#: ``session.info`` key: commands to run inline once the session's transaction commits.
_INLINE = "order.inline_saga_commands"



class ForeignPayment(RuntimeError):
    """A participant's answer about money is not what the saga asked for (another
    payment, order, amount or currency): it is refused — recorded and alarmed — and the
    saga waits as if no answer had come."""

    def __init__(self, refused: RefusedPayment) -> None:
        super().__init__(f"{refused.event_type}: {refused.reason}")
        self.refused = refused


async def refuse_payment(conn: Connection, refused: RefusedPayment) -> None:
    """Record and alarm a payment the saga will not apply: a row, a warning, a count."""
    (order_id, event_id, event_type, source, reason, payment_id, intent_id, amount,
     currency) = refused.columns()
    log.warning("refused %s for order %s: %s (payment %s, intent %s, amount %s %s; event %s "
                "from %s)", event_type, order_id, reason, payment_id, intent_id, amount,
                currency, event_id, source)
    PAYMENT_EVENTS_REJECTED.labels(reason=refused.reason).inc()
    await repository.record_refusal(conn, refused)


def _refused_report(event: EventEnvelope, reason: str) -> RefusedPayment:
    report = PaymentReport.from_payload(event.payload)
    return RefusedPayment(reason=reason, event_type=event.type, order_id=report.order_id,
                          event_id=event.id, source=event.source,
                          payment_id=report.payment_id, intent_id=report.intent_id,
                          amount=report.amount, currency=report.currency)


def _as_uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


class Participants(Protocol):
    """Carries out one saga command against inventory, payment or shipping, and says what
    happened. Must be idempotent per ``command.idempotency_key``: the same command may be
    delivered more than once. Transport failures should raise (the consumer retries and
    the saga's deadline resends); only a definite refusal becomes ``StepFailed``."""

    async def perform(self, order: SagaOrder, command: Command) -> SagaEvent: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class Orchestrator:
    def __init__(self, database: Database, participants: Participants, source: str,
                 policy: SagaPolicy | None = None, *, inline_concurrency: int = 32,
                 inline_backlog: int = 2_000) -> None:
        """``source`` is the service name: the events' source and the consumer group of
        the service's own topic, whose ``processed_events`` marks inline runs share."""
        self.database = database
        self.participants = participants
        self.source = source
        self.policy = policy or SagaPolicy()
        self.inline_concurrency = inline_concurrency
        self.inline_backlog = inline_backlog
        self._inline_slots = asyncio.Semaphore(max(1, inline_concurrency))
        self._inline_tasks: set[asyncio.Task[None]] = set()
        #: Command event id -> whether its inline run committed, until the bus delivers it.
        self._inline_outcomes: _Recent[uuid.UUID, asyncio.Future[bool]] = _Recent(
            4 * inline_backlog)
        #: Payment id -> (order id, charge) for charges whose success a committed step
        #: applied (the payment service announces the same success on the bus).
        self._charged: _Recent[str, tuple[str, Charge | None]] = _Recent(4 * inline_backlog)
        self._closing = False

    # -- starting ----------------------------------------------------------------------------

    async def begin(self, session: AsyncSession, order: Order) -> None:
        """Start the saga of a freshly inserted order, inside the caller's transaction."""
        now = utcnow()
        decision = start(str(order.id), now, self.policy)
        commands = self._commands(order, decision)
        await repository.start_saga(await repository.connection_of(session), order.id,
                                    decision.saga, now, status=order.status,
                                    note="order placed", events=commands)
        ORDERS_TOTAL.labels(status=order.status).inc()
        self._after_session_commit(session, commands)

    # -- applying ----------------------------------------------------------------------------

    async def apply(self, session: AsyncSession, order_id: uuid.UUID,
                    event: SagaEvent) -> Saga | None:
        """Feed ``event`` to an order's saga inside the caller's transaction."""
        decision = await self._advance(session, order_id, event)
        return None if decision is None else decision.saga

    async def settle_payment(self, session: AsyncSession, event: EventEnvelope, *,
                             succeeded: bool) -> Saga | None:
        """The payment service's later news of a payment (``payment.succeeded`` or
        ``payment.failed``), inside the caller's transaction: applied to the order's saga
        only when it is the saga's own charge (:func:`~services.order.saga.charge_mismatch`);
        anything else — no such order, another payment, intent, amount or currency — is
        recorded and alarmed (:func:`refuse_payment`) and changes nothing, as is a payload
        that is no payment event at all (:class:`~kommerce.contracts.events.payment.PaymentEvent`
        refuses it: an amount of ``"16699"`` is no amount)."""
        conn = await repository.connection_of(session)
        try:
            payment = PaymentEvent.parse(event.payload, schema_version=event.schema_version)
        except InvalidPayload as invalid:
            log.warning("%s from %s (event %s): %s", event.type, event.source, event.id, invalid)
            await refuse_payment(conn, _refused_report(event, Mismatch.MALFORMED))
            return None
        report = PaymentReport(order_id=payment.order_id, payment_id=payment.payment_id,
                               intent_id=payment.intent_id, amount=payment.amount,
                               currency=payment.currency)
        order_id = _as_uuid(report.order_id)
        locked = None if order_id is None else await repository.lock_saga(conn, order_id)
        if locked is None:
            await refuse_payment(conn, _refused_report(event, Mismatch.UNKNOWN_ORDER))
            return None
        saga, order = locked
        why = payment.failure_message or payment.status
        decision = advance(saga, PaymentSettled(report, succeeded,
                                                f"payment declined: {why or 'declined'}"),
                           utcnow(), self.policy)
        if decision.rejected is not None:
            await refuse_payment(conn, _refused_report(event, decision.rejected))
        elif decision.changed:
            self._after_session_commit(
                session, await self._store(conn, order, decision, previous=saga.state))
        return decision.saga

    async def _advance(self, session: AsyncSession, order_id: uuid.UUID,
                       event: SagaEvent) -> Decision | None:
        conn = await repository.connection_of(session)
        locked = await repository.lock_saga(conn, order_id)
        if locked is None:
            return None
        saga, order = locked
        decision = advance(saga, event, utcnow(), self.policy)
        if decision.changed:
            self._after_session_commit(
                session, await self._store(conn, order, decision, previous=saga.state))
        return decision

    async def _store(self, conn: Connection, order: SagaOrder, decision: Decision,
                     previous: SagaState) -> list[EventEnvelope]:
        """Write the decision; returns the commands among the events written."""
        saga = decision.saga
        moved = saga.state is not previous
        commands = self._commands(order, decision)
        written = commands
        if moved:
            written = [events.order_status_changed(
                order, source=self.source, status=saga.state.value, previous=previous.value,
                reason=saga.reason), *commands]
        await repository.save_saga(conn, order, saga, utcnow(), moved=moved, events=written)
        if moved:
            ORDERS_TOTAL.labels(status=saga.state.value).inc()
        return commands

    def _commands(self, order: Order | SagaOrder, decision: Decision) -> list[EventEnvelope]:
        """The decision's commands as ``order.saga_command`` events."""
        return [events.saga_command(order.id, command, source=self.source)
                for command in decision.commands]

    def _after_session_commit(self, session: AsyncSession,
                              commands: list[EventEnvelope]) -> None:
        """Once the session commits: the relays publish what the saga wrote, and its
        commands run inline."""
        outbox.wake_after_commit(session)
        if self.inline_concurrency > 0:
            session.sync_session.info.setdefault(_INLINE, []).extend(
                (self, envelope) for envelope in commands)

    # -- executing commands ------------------------------------------------------------------

    async def run_command(self, session: AsyncSession, event: EventEnvelope) -> SagaEvent | None:
        """Carry out one command inside the caller's transaction (its delivery by the bus);
        see :meth:`_run`."""
        reply, commands = await self._run(await repository.connection_of(session), event)
        if reply is not None:  # None: nothing was written
            self._after_session_commit(session, commands)
        return reply

    async def _run(self, conn: Connection, event: EventEnvelope,
                   ) -> tuple[SagaEvent | None, list[EventEnvelope]]:
        """Carry out one command, unless the saga has moved past it (a stale duplicate or
        the other path's copy); returns the reply applied, if any, and the next commands.

        The saga row's lock and state are what make a command run once: a copy arriving
        later finds another step (or the back-off's ``resend``) awaited and does nothing.
        """
        command = SagaCommand.parse(event.payload, schema_version=event.schema_version)
        locked = await repository.lock_saga(conn, command.order_id)
        if locked is None:
            return None, []
        saga, order = locked
        if saga.current is None or saga.current.value != command.action or saga.resend:
            return None, []
        try:
            reply = await self.participants.perform(
                order, Command(saga.order_id, saga.current, saga.attempt, charge=saga.charge))
        except ForeignPayment as refused:
            # Kept with the saga untouched: its deadline asks again, and gives up in time.
            await refuse_payment(conn, refused.refused)
            return None, []
        decision = advance(saga, reply, utcnow(), self.policy)
        if decision.rejected is not None:
            await refuse_payment(conn, RefusedPayment(
                reason=decision.rejected, event_type=f"{saga.current.value} answer",
                order_id=str(order.id), payment_id=getattr(reply, "ref", None)))
            return None, []
        if not decision.changed:
            return None, []
        return reply, await self._store(conn, order, decision, previous=saga.state)

    async def settled(self, event: EventEnvelope) -> bool:
        """True for an event whose effect this process has already committed: a command it
        ran inline (waiting for a run still under way), or the payment service's news of a
        charge whose success a step applied. ``False`` leaves it to the consumer."""
        if event.type == SAGA_COMMAND:
            outcome = self._inline_outcomes.pop(event.id)
            return outcome is not None and await asyncio.shield(outcome)
        if event.type == PAYMENT_SUCCEEDED:
            charged = self._charged.pop(str(event.payload.get("payment_id")))
            if charged is None:
                return False
            order_id, charge = charged
            # Only the very charge applied; anything else goes the checked way.
            return charge is not None and charge_mismatch(
                charge, order_id, PaymentReport.from_payload(event.payload)) is None
        return False

    # -- running commands inline ----------------------------------------------------------------

    def _run_inline(self, envelope: EventEnvelope) -> None:
        """Start the command now (after its transaction committed); called from the
        commit hook below, inside the event loop."""
        if self._closing or len(self._inline_tasks) >= self.inline_backlog:
            return  # stopping, or saturated: the bus delivery will do it
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[bool] = loop.create_future()
        self._inline_outcomes.put(envelope.id, outcome)
        task = loop.create_task(self._inline(envelope, outcome),
                                name=f"saga-command:{envelope.id}")
        self._inline_tasks.add(task)
        task.add_done_callback(self._inline_tasks.discard)

    async def _inline(self, envelope: EventEnvelope, outcome: asyncio.Future[bool]) -> None:
        committed = False
        try:
            async with self._inline_slots:
                # Its own transaction and no session: every statement of the step is
                # the repository's asyncpg one (see there why).
                async with repository.transaction(self.database.engine) as conn:
                    reply, commands = await self._run(conn, envelope)
                committed = True
                if reply is not None:
                    outbox.wake_relays()
                    for command in commands:
                        self._run_inline(command)
                if (isinstance(reply, StepSucceeded) and reply.step is Step.CHARGE_PAYMENT
                        and reply.ref is not None):
                    self._charged.put(reply.ref, (str(envelope.payload["order_id"]),
                                                  reply.charge))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # failed: the bus delivery retries
            log.debug("inline saga command %s left to the bus: %r", envelope.id, exc)
        finally:
            outcome.set_result(committed)

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Start no more inline runs and let those under way finish (a step cut off halfway
        would be done again by the next instance: harmless, being idempotent, but a
        second call to a participant all the same); cancel what is left after the grace
        period (their transactions roll back and the bus redelivers them)."""
        self._closing = True
        tasks = list(self._inline_tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- deadlines ---------------------------------------------------------------------------

    async def tick_due(self, limit: int = 100) -> int:
        """Tick every unsettled saga past its deadline; returns how many moved."""
        moved = 0
        async with self.database.session() as session, session.begin():
            for order_id in await repository.due_sagas(session, utcnow(), limit):
                decision = await self._advance(session, order_id, Tick())
                moved += decision is not None and decision.changed
        return moved

    async def run_timers(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.tick_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be restarting: try again next round
                log.exception("saga timer pass failed")
            await asyncio.sleep(interval_seconds)


class _Recent(Generic[K, V]):
    """A bounded memo: the oldest entries go first once ``capacity`` is reached (an entry
    lost this way only sends its event down the database path)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)


@event.listens_for(Session, "after_commit")
def _run_committed_commands(session: Session) -> None:
    for orchestrator, envelope in session.info.pop(_INLINE, ()):
        orchestrator._run_inline(envelope)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_commands(session: Session) -> None:
    session.info.pop(_INLINE, None)
