"""A local stand-in that answers as Stripe answers its documented test payment methods, so
an embedded or offline shop takes the whole checkout, declines included, without an account.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from services.core.errors import Unprocessable
from services.payment.providers.base import (
    ChargeResult,
    ChargeStatus,
    RefundResult,
    SavedCard,
    check_amount,
    check_payment_method,
)

#: What follows the prefix in a Stripe object id (``pi_3MtwBwLkdIwHu7ix28a3tqPa``).
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 24


@dataclass(frozen=True, slots=True)
class TestCard:
    brand: str
    last4: str
    outcome: str  # succeeded | declined | requires_action
    decline_code: str | None = None
    message: str | None = None
    risk_level: str = "normal"


#: Stripe's documented test payment methods and what Stripe does with each.
TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242", "succeeded"),
    "pm_card_visa_debit": TestCard("visa", "5556", "succeeded"),
    "pm_card_mastercard": TestCard("mastercard", "4444", "succeeded"),
    "pm_card_amex": TestCard("amex", "8431", "succeeded"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", "declined", "generic_decline",
                                       "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", "declined", "insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedFraudulent": TestCard(
        "visa", "0019", "declined", "fraudulent", "Your card was declined.", "highest"),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "0069", "declined", "expired_card", "Your card has expired."),
    "pm_card_riskLevelElevated": TestCard("visa", "9235", "succeeded", risk_level="elevated"),
    "pm_card_authenticationRequired": TestCard("visa", "3184", "requires_action"),
    "pm_card_threeDSecure2Required": TestCard("visa", "3220", "requires_action"),
}


_ANSWER_TYPES: dict[str, Any] = {"charge": ChargeResult, "refund": RefundResult,
                                 "card": SavedCard}


def _tagged(answer: Any) -> dict[str, Any]:
    """A sandbox answer as JSON, with its type: a charge, refund, saved card, id or None."""
    for tag, kind in _ANSWER_TYPES.items():
        if isinstance(answer, kind):
            return {"type": tag, "value": asdict(answer)}
    return {"type": "plain", "value": answer}


def _untagged(data: dict[str, Any]) -> Any:
    if data["type"] == "plain":
        return data["value"]
    value = dict(data["value"])
    if data["type"] == "charge":
        value["status"] = ChargeStatus(value["status"])
    return _ANSWER_TYPES[data["type"]](**value)


@dataclass
class _SandboxIntent:
    result: ChargeResult
    refunded: int = 0


@dataclass
class SandboxGateway:
    """Stripe's test-mode behaviour: for the embedded default and for tests of the decline
    paths that stripe-mock (which never declines) cannot exercise.

    Every operation is a request and the answer it got: the answer is decided first
    (validation, new ids), then :meth:`_apply` changes the state from the pair. With
    ``state_path`` each pair is also appended to that file (JSON lines) and replayed on
    start, so that like Stripe the sandbox still knows a charge after a restart (a refund
    of an order paid before ``kommerce up`` was restarted would otherwise be refused),
    and a change costs one appended line however long the history.
    """

    state_path: Path | None = None
    _intents: dict[str, _SandboxIntent] = field(default_factory=dict)
    _by_key: dict[str, tuple[tuple[Any, ...], Any]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Saved methods: their new id -> the test card they were made from.
    _saved: dict[str, TestCard] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            self._replay(self.state_path.read_bytes().splitlines())

    def _card(self, payment_method: str) -> TestCard | None:
        return self._saved.get(payment_method) or TEST_CARDS.get(payment_method)

    def _known_card(self, payment_method: str) -> TestCard:
        """The card a charge or an attach names, refused as Stripe refuses an unknown one."""
        check_payment_method(payment_method)
        card = self._card(payment_method)
        if card is None:
            raise Unprocessable("unknown payment method; the sandbox knows Stripe's test "
                                "methods such as pm_card_visa", code="resource_missing")
        return card

    @staticmethod
    def _next_id(prefix: str) -> str:
        """A new Stripe-shaped id, random rather than counted: a sandbox without a state
        file forgets everything on a restart but the payment service's database does not
        (``intent_id`` is unique there), so a counter starting again at 1 would give a new
        charge an old charge's id and the charge would be refused. 24 characters drawn from
        62 (~143 bits) make a repeat as unlikely as with Stripe's own ids."""
        return f"{prefix}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))

    # -- state: requests and their answers ---------------------------------------------------

    def _apply(self, request: tuple[Any, ...], answer: Any) -> None:
        """What an answered request changes (answers carry the ids they made)."""
        match request[0]:
            case "charge":
                self._intents[answer.intent_id] = _SandboxIntent(answer)
            case "refund":
                self._intents[request[1]].refunded += answer.amount
            case "cancel" | "authenticate":
                self._intents[request[1]].result = answer
            case "attach":
                card = self._card(request[2])
                assert card is not None
                self._saved[answer.id] = card
            case "detach":
                self._saved.pop(request[1], None)

    def _journal(self, key: str, request: tuple[Any, ...], answer: Any) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with self.state_path.open("ab") as journal:
            journal.write(orjson.dumps({"key": key, "request": list(request),
                                        "answer": _tagged(answer)}) + b"\n")

    def _replay(self, lines: list[bytes]) -> None:
        for line in lines:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:  # the last line of a crash mid-write
                continue
            request, answer = tuple(entry["request"]), _untagged(entry["answer"])
            self._by_key[entry["key"]] = (request, answer)
            self._apply(request, answer)

    async def _once(self, key: str, request: tuple[Any, ...], answer_for: Any) -> Any:
        """Stripe's idempotency: the same key repeats the first answer; the same key with
        other parameters is an error rather than a second operation."""
        async with self._lock:
            if key in self._by_key:
                first_request, answer = self._by_key[key]
                if first_request != request:
                    raise Unprocessable("this idempotency key was used with different "
                                        "parameters", code="idempotency_key_reused")
                return answer
            answer = answer_for()
            self._by_key[key] = (request, answer)
            self._apply(request, answer)
            self._journal(key, request, answer)
            return answer

    # -- the gateway -------------------------------------------------------------------------

    async def create_customer(self, *, email: str | None, idempotency_key: str) -> str:
        return str(await self._once(idempotency_key, ("customer", email),
                                    lambda: self._next_id("cus")))

    async def charge(self, *, amount: int, currency: str, payment_method: str,
                     idempotency_key: str, customer: str | None = None,
                     metadata: dict[str, str] | None = None) -> ChargeResult:
        check_amount(amount, currency)
        card = self._known_card(payment_method)

        def answer() -> ChargeResult:
            intent_id = self._next_id("pi")
            status = {"succeeded": ChargeStatus.SUCCEEDED, "declined": ChargeStatus.DECLINED,
                      "requires_action": ChargeStatus.REQUIRES_ACTION}[card.outcome]
            return ChargeResult(
                intent_id=intent_id, status=status, amount=amount, currency=currency,
                client_secret=f"{intent_id}_secret_sandbox"
                if status is ChargeStatus.REQUIRES_ACTION else None,
                card_brand=card.brand, card_last4=card.last4, decline_code=card.decline_code,
                failure_message=card.message, risk_level=card.risk_level)

        result: ChargeResult = await self._once(
            idempotency_key, ("charge", amount, currency, payment_method, customer), answer)
        return result

    async def refund(self, *, intent_id: str, amount: int | None,
                     idempotency_key: str) -> RefundResult:
        def answer() -> RefundResult:
            intent = self._intents.get(intent_id)
            if intent is None:
                raise Unprocessable("no such payment intent", code="resource_missing")
            if intent.result.status is not ChargeStatus.SUCCEEDED:
                raise Unprocessable("only a succeeded payment can be refunded",
                                    code="charge_not_refundable")
            left = intent.result.amount - intent.refunded
            wanted = left if amount is None else amount
            if wanted < 1 or wanted > left:
                raise Unprocessable(f"refund amount must be between 1 and {left}",
                                    code="amount_too_large")
            return RefundResult(refund_id=self._next_id("re"), intent_id=intent_id,
                                amount=wanted, status="succeeded")

        result: RefundResult = await self._once(idempotency_key,
                                                ("refund", intent_id, amount), answer)
        return result

    async def cancel(self, *, intent_id: str, idempotency_key: str) -> ChargeResult:
        def answer() -> ChargeResult:
            intent = self._intents.get(intent_id)
            if intent is None:
                raise Unprocessable("no such payment intent", code="resource_missing")
            if intent.result.status is ChargeStatus.SUCCEEDED:
                raise Unprocessable("a succeeded payment is refunded, not canceled",
                                    code="payment_intent_unexpected_state")
            return replace(intent.result, status=ChargeStatus.CANCELED, client_secret=None)

        result: ChargeResult = await self._once(idempotency_key, ("cancel", intent_id), answer)
        return result

    async def complete_action(self, *, intent_id: str, idempotency_key: str) -> ChargeResult:
        """The shopper passes the 3-D Secure challenge: an intent waiting for it succeeds
        (as Stripe's ``pm_card_threeDSecure2Required`` does once authenticated); any other
        intent is returned as it stands."""
        def answer() -> ChargeResult:
            intent = self._intents.get(intent_id)
            if intent is None:
                raise Unprocessable("no such payment intent", code="resource_missing")
            if intent.result.status is not ChargeStatus.REQUIRES_ACTION:
                return intent.result
            return replace(intent.result, status=ChargeStatus.SUCCEEDED, client_secret=None)

        result: ChargeResult = await self._once(idempotency_key, ("authenticate", intent_id),
                                                answer)
        return result

    async def attach(self, *, customer: str, payment_method: str,
                     idempotency_key: str) -> SavedCard:
        card = self._known_card(payment_method)

        def answer() -> SavedCard:
            # Like Stripe attaching a test method: a new id, usable for later charges.
            return SavedCard(id=self._next_id("pm"), brand=card.brand, last4=card.last4)

        result: SavedCard = await self._once(idempotency_key,
                                             ("attach", customer, payment_method), answer)
        return result

    async def detach(self, *, payment_method: str, idempotency_key: str) -> None:
        check_payment_method(payment_method)
        await self._once(idempotency_key, ("detach", payment_method), lambda: None)
