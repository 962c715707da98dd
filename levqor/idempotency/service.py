"""Idempotency-Key: the same key from the same user within 24 h replays the first answer.

The record is written in the same transaction as whatever the request creates, so either
both exist or neither does. Two racing requests with one key: the second one's insert hits
the unique constraint, its transaction (and its creation) rolls back, and it answers 409.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from cryptography.fernet import MultiFernet
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.db.base import rowcount, utcnow
from levqor.idempotency.models import IdempotencyRecord

TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


class KeyReused(errors.InvalidRequest):
    """This Idempotency-Key was already used with a different request."""

    status = 422
    code = "idempotency_key_reused"


class KeyInFlight(errors.Conflict):
    """A request with this Idempotency-Key is still being processed; retry shortly."""

    code = "idempotency_key_in_flight"


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: Any


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\0".join([method.encode(), path.encode(), body])).hexdigest()


def validate_key(key: str) -> str:
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise errors.InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters."
        )
    return key


async def lookup(
    session: AsyncSession, *, user_id: str, key: str, fingerprint: str, cipher: MultiFernet
) -> StoredAnswer | None:
    record = await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at > utcnow() - TTL,
        )
    )
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise KeyReused()
    body = orjson.loads(cipher.decrypt(record.response_encrypted.encode()))
    return StoredAnswer(record.status_code, body)


async def remember(
    session: AsyncSession,
    *,
    user_id: str,
    key: str,
    fingerprint: str,
    answer: StoredAnswer,
    cipher: MultiFernet,
) -> None:
    # An expired record with the same key is replaced.
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at <= utcnow() - TTL,
        )
    )
    session.add(
        IdempotencyRecord(
            user_id=user_id,
            key=key,
            request_hash=fingerprint,
            status_code=answer.status_code,
            response_encrypted=cipher.encrypt(orjson.dumps(answer.body)).decode(),
        )
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise KeyInFlight() from exc


async def prune(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at <= utcnow() - TTL)
    )
    return rowcount(result)
