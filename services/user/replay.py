"""Idempotent registration: a retried ``POST /auth/register`` with the same
``Idempotency-Key`` gets the first attempt's account, not ``409 email_taken``.

Registering waits for a password hash, which on a loaded machine can outlast the client's
patience: the client gives up, the account is created anyway, and a plain retry is told
the address is taken, as if someone else had it. With a key, the retry is answered with the
account the first attempt made (201, ``Idempotent-Replayed: true``); while the first attempt
is still running, the retry waits for it a while and else gets ``409
registration_in_progress`` with Retry-After. A key reused for another address or name is
refused (422), and a key whose attempt failed is forgotten, so retrying repeats it.

Kept in Redis (the service's own prefix): the address is hashed in the key's value, the
password not stored at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid

from redis.asyncio import Redis

from services.core.errors import Conflict, Unprocessable

#: How long a finished registration is replayed; a pending one is forgotten much sooner,
#: so a crashed attempt does not block its key for a day.
DONE_TTL_SECONDS = 24 * 3600
PENDING_TTL_SECONDS = 120


def fingerprint(email: str, full_name: str | None) -> str:
    return hashlib.sha256(f"{email}\0{full_name or ''}".encode()).hexdigest()


class RegistrationReplay:
    """The record of one ``Idempotency-Key``: pending, or done with the account's id."""

    def __init__(self, redis: Redis, prefix: str, key: str, print_: str, *,
                 wait_seconds: float) -> None:
        self.redis = redis
        self.key = f"{prefix}register:{hashlib.sha256(key.encode()).hexdigest()}"
        self.fingerprint = print_
        self.wait_seconds = wait_seconds

    async def claim(self) -> uuid.UUID | None:
        """None when this request is the first with its key (it registers); else the id of
        the account the first one made, waiting for it while it runs."""
        pending = json.dumps({"fp": self.fingerprint, "user_id": None})
        deadline = time.monotonic() + self.wait_seconds
        while True:
            if await self.redis.set(self.key, pending, nx=True, ex=PENDING_TTL_SECONDS):
                return None
            raw = await self.redis.get(self.key)
            if raw is None:  # the first attempt failed and let go of the key meanwhile
                continue
            record = json.loads(raw)
            if record["fp"] != self.fingerprint:
                raise Unprocessable("this Idempotency-Key was used for another "
                                    "registration; use a new key", code="idempotency_key_reused")
            if record["user_id"] is not None:
                return uuid.UUID(record["user_id"])
            if time.monotonic() >= deadline:
                raise Conflict("the first registration with this Idempotency-Key is still "
                               "running; retry with the same key shortly",
                               code="registration_in_progress",
                               headers={"Retry-After": "1"})
            await asyncio.sleep(0.2)

    async def done(self, user_id: uuid.UUID) -> None:
        await self.redis.set(self.key, json.dumps({"fp": self.fingerprint,
                                                   "user_id": str(user_id)}),
                             ex=DONE_TTL_SECONDS)

    async def forget(self) -> None:
        await self.redis.delete(self.key)
