"""Signed callbacks: when a run with a `callback_url` ends, POST it per Standard Webhooks.

The delivery row is written in the same transaction as the job's final status, so a
finished run's callback cannot be lost. Workers claim due deliveries under a lease, as
they claim jobs. Every try is recorded; a non-2xx answer or a network error is retried
(`callback_backoff_s`, four times longer each try, capped at 6 h) until
`callback_max_attempts`. The `webhook-id` stays the same across tries, so a receiver can
drop duplicates; each user verifies with their own `whsec_` secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography.fernet import MultiFernet
from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from standardwebhooks.webhooks import Webhook

from levqor.config import Settings
from levqor.connectors import safety
from levqor.connectors.errors import ConnectorError
from levqor.db.base import new_id, utcnow
from levqor.db.engine import Database
from levqor.jobs.models import (
    CallbackAttempt,
    CallbackDelivery,
    CallbackSecret,
    callback_deliveries_table,
)
from levqor.logging import get_logger

log = get_logger("levqor.callbacks")
MAX_BACKOFF = timedelta(hours=6)


@dataclass(frozen=True)
class ClaimedDelivery:
    id: str
    user_id: str
    url: str
    payload: Any
    attempts: int


async def enqueue(
    session: AsyncSession | AsyncConnection,
    *,
    job_id: str,
    user_id: str,
    workflow_id: str,
    status: str,
    result: Any,
    error: str | None,
    url: str,
) -> None:
    payload = {
        "type": f"job.{status}",
        "timestamp": utcnow().isoformat(),
        "data": {
            "job_id": job_id,
            "workflow_id": workflow_id,
            "status": status,
            "result": result,
            "error": error,
        },
    }
    await session.execute(
        insert(callback_deliveries_table).values(
            id=new_id("msg"), job_id=job_id, user_id=user_id, url=url, payload=payload
        )
    )


async def signing_secret(
    session: AsyncSession, *, user_id: str, cipher: MultiFernet, rotate: bool = False
) -> str:
    """The user's `whsec_` secret, made on first use; `rotate` replaces it."""
    stored = await session.get(CallbackSecret, user_id)
    if stored is not None and not rotate:
        return cipher.decrypt(stored.secret_encrypted.encode()).decode()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    encrypted = cipher.encrypt(secret.encode()).decode()
    if stored is None:
        session.add(CallbackSecret(user_id=user_id, secret_encrypted=encrypted))
    else:
        stored.secret_encrypted, stored.created_at = encrypted, utcnow()
    await session.flush()
    return secret


_deliveries = callback_deliveries_table.c
# Built once: a worker polls for due deliveries every poll interval, and building the
# statement each time cost more than running it.
CLAIM_DUE = (
    update(callback_deliveries_table)
    .where(
        _deliveries.id.in_(
            select(_deliveries.id)
            .where(
                or_(
                    and_(
                        _deliveries.status == "pending",
                        _deliveries.next_attempt_at <= bindparam("now"),
                    ),
                    and_(
                        _deliveries.status == "sending",
                        _deliveries.lease_expires_at < bindparam("now"),
                    ),
                )
            )
            .order_by(_deliveries.next_attempt_at)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        status="sending",
        lease_owner=bindparam("worker"),
        lease_expires_at=bindparam("expires"),
        attempts=_deliveries.attempts + 1,
    )
    .returning(
        _deliveries.id,
        _deliveries.user_id,
        _deliveries.url,
        _deliveries.payload,
        _deliveries.attempts,
    )
)


async def claim(
    connection: AsyncConnection, *, worker_id: str, limit: int, lease: timedelta, now: datetime
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries to this worker: one statement, on a connection
    that commits it on its own (`Database.one_statement`)."""
    rows = await connection.execute(
        CLAIM_DUE, {"now": now, "limit": limit, "worker": worker_id, "expires": now + lease}
    )
    return [ClaimedDelivery(*row) for row in rows]


def signed_request(
    delivery: ClaimedDelivery, secret: str, now: datetime
) -> tuple[str, dict[str, str]]:
    body = json.dumps(delivery.payload, separators=(",", ":"), default=str)
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery.id, now, body),
    }
    return body, headers


async def deliver(
    delivery: ClaimedDelivery,
    *,
    db: Database,
    http: httpx.AsyncClient,
    cipher: MultiFernet,
    settings: Settings,
    worker_id: str,
) -> None:
    async with db.session(write=True) as session, session.begin():
        secret = await signing_secret(session, user_id=delivery.user_id, cipher=cipher)
    now = utcnow()
    body, headers = signed_request(delivery, secret, now)
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    final = False  # a URL the guard refuses will never be delivered
    timeout_s = settings.callback_timeout_s
    try:
        # The answer's status is all that counts: its body is never read (however
        # large), and the whole exchange is bounded (httpx bounds each read only).
        async with (
            asyncio.timeout(timeout_s),
            http.stream(
                "POST", delivery.url, content=body, headers=headers, timeout=timeout_s
            ) as response,
        ):
            status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except safety.UnsafeUrl as exc:
        error, final = exc.message, True
    except TimeoutError:
        error = f"no answer within {timeout_s:g} s"
    except (httpx.HTTPError, ConnectorError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    async with db.session(write=True) as session, session.begin():
        session.add(
            CallbackAttempt(
                delivery_id=delivery.id,
                attempt=delivery.attempts,
                status_code=status_code,
                error=error,
                duration_ms=elapsed_ms,
            )
        )
        await session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.id == delivery.id, CallbackDelivery.lease_owner == worker_id)
            .values(
                **_outcome(delivery, error, settings, final=final),
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
    log.info(
        "callback_attempt",
        delivery_id=delivery.id,
        attempt=delivery.attempts,
        status_code=status_code,
        error=error,
    )


def _outcome(
    delivery: ClaimedDelivery, error: str | None, settings: Settings, *, final: bool = False
) -> dict[str, Any]:
    now = utcnow()
    if error is None:
        return {"status": "delivered", "delivered_at": now}
    if final or delivery.attempts >= settings.callback_max_attempts:
        return {"status": "failed"}
    wait = timedelta(seconds=settings.callback_backoff_s * 4 ** (delivery.attempts - 1))
    return {"status": "pending", "next_attempt_at": now + min(wait, MAX_BACKOFF)}


async def for_job(
    session: AsyncSession, *, job_id: str
) -> list[tuple[CallbackDelivery, list[CallbackAttempt]]]:
    deliveries = list(
        await session.scalars(
            select(CallbackDelivery)
            .where(CallbackDelivery.job_id == job_id)
            .order_by(CallbackDelivery.created_at)
        )
    )
    attempts = (
        list(
            await session.scalars(
                select(CallbackAttempt)
                .where(CallbackAttempt.delivery_id.in_([d.id for d in deliveries]))
                .order_by(CallbackAttempt.attempt)
            )
        )
        if deliveries
        else []
    )
    return [(d, [a for a in attempts if a.delivery_id == d.id]) for d in deliveries]
