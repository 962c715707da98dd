"""The audit log: who did what to which object, when and from where (a keyed hash of the
IP), for every security- or money-relevant action. Append-only and hash-chained.

Appending takes a lock first (a transaction-scoped advisory lock on PostgreSQL; SQLite's
writers are serial anyway), so two writers cannot both chain onto the same row.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.audit.models import AuditEntry
from levqor.db import pages
from levqor.db.base import serialise, utcnow

GENESIS = "0" * 64
BATCH = 1000
# "From where": the client's address and the key to hash it with, set per request
# (deps.get_session), so every entry written while serving a request carries the hash
# without passing it along; hashed only when an entry is written.
client: ContextVar[tuple[str, str] | None] = ContextVar("audit_client", default=None)


def hash_ip(key: str, ip: str | None) -> str | None:
    return hmac.new(key.encode(), ip.encode(), hashlib.sha256).hexdigest() if ip else None


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    content = {
        "at": entry.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "object_id": entry.object_id,
        "ip_hash": entry.ip_hash,
        "detail": entry.detail or {},
    }
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + b"|" + canonical).hexdigest()


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    object_id: str | None = None,
    ip_hash: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    await serialise(session, "levqor_audit")
    last = await session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    entry = AuditEntry(
        at=utcnow(),
        actor=actor,
        action=action,
        object_id=object_id,
        ip_hash=ip_hash or _client_hash(),
        detail=detail or {},
        prev_hash=last or GENESIS,
    )
    entry.hash = entry_hash(entry.prev_hash, entry)
    session.add(entry)
    await session.flush()
    return entry


def client_hash() -> str | None:
    """The keyed hash of the IP of the request being served, if any."""
    return _client_hash()


def _client_hash() -> str | None:
    found = client.get()
    return hash_ip(*found) if found else None


@dataclass(frozen=True)
class Verdict:
    checked: int
    first_bad_id: int | None
    reason: str | None

    @property
    def intact(self) -> bool:
        return self.first_bad_id is None


async def verify(session: AsyncSession) -> Verdict:
    """Walk the chain in order; the first row whose hash or link does not hold."""
    expected_prev, checked = GENESIS, 0
    async for entry in _in_order(session):
        if entry.prev_hash != expected_prev:
            return Verdict(checked, entry.id, "it does not link to the row before it")
        if entry_hash(entry.prev_hash, entry) != entry.hash:
            return Verdict(checked, entry.id, "its content does not match its hash")
        expected_prev, checked = entry.hash, checked + 1
    return Verdict(checked, None, None)


async def _in_order(session: AsyncSession) -> AsyncIterator[AuditEntry]:
    after = 0
    while True:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(BATCH)
            )
        ).all()
        if not rows:
            return
        for entry in rows:
            yield entry
        after = rows[-1].id


async def search(
    session: AsyncSession,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    query = _matching(actor, action, since).order_by(AuditEntry.id.desc()).limit(limit)
    return list(await session.scalars(query))


async def page(
    session: AsyncSession,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[AuditEntry], str | None]:
    """`search`, a page at a time (newest first)."""
    return await pages.newest_first(
        session,
        _matching(actor, action, since),
        at=AuditEntry.at,
        key=AuditEntry.id,
        limit=limit,
        cursor=cursor,
    )


def _matching(actor: str | None, action: str | None, since: datetime | None) -> Select[Any]:
    query = select(AuditEntry)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    if since:
        query = query.where(AuditEntry.at >= since)
    return query


ERASED = "account_erased"


async def was_erased(session: AsyncSession, *, user_id: str) -> bool:
    """Whether this server erased `user_id` (its receipt is in the audit log): what
    lets billing cancel a subscription still charging them, and not one of another
    server that shares the Stripe account."""
    receipt = await session.scalar(
        select(AuditEntry.id)
        .where(AuditEntry.object_id == user_id, AuditEntry.action == ERASED)
        .limit(1)
    )
    return receipt is not None
