"""Data exports too large to answer in one response (GDPR Art. 15/20 at scale).

A user asks; a `pending` row is written. The scheduler builds pending exports one at a
time (`build_pending`): the document is read in a read transaction, gzipped, sealed with
the key ring (it is nothing but personal data) and stored with an expiry. The user then
fetches it through a signed link: an HMAC over the export id and the expiry time, so the
link works without a login (a download manager, another device) until it expires, and
cannot be forged or stretched. Expired exports are deleted by upkeep.

A build that died with its process (`building` for longer than `STALE_BUILD`) is
claimed again; claims are compare-and-set, so two schedulers never build the same one.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors, jsonvalues
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.compliance import privacy
from levqor.compliance.models import DataExport
from levqor.config import Settings
from levqor.db.base import key_ring, new_id, rowcount, utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger

log = get_logger("levqor.exports")

PENDING, BUILDING, READY, FAILED = "pending", "building", "ready", "failed"
STALE_BUILD = timedelta(minutes=10)


async def request(session: AsyncSession, *, user: User, now: datetime) -> DataExport:
    """The user's export in the making, or a new one: asking again while one is pending
    or still downloadable does not build another."""
    current = await session.scalar(
        select(DataExport)
        .where(
            DataExport.user_id == user.id,
            or_(
                DataExport.status.in_((PENDING, BUILDING)),
                (DataExport.status == READY) & (DataExport.expires_at > now),
            ),
        )
        .order_by(DataExport.requested_at.desc())
        .limit(1)
    )
    if current is not None:
        return current
    export = DataExport(id=new_id("exp"), user_id=user.id, status=PENDING, requested_at=now)
    session.add(export)
    await audit.record(session, actor=user.id, action="data_export_requested", object_id=export.id)
    await session.flush()
    return export


async def get(session: AsyncSession, *, user: User, export_id: str) -> DataExport:
    export = await session.scalar(
        select(DataExport).where(DataExport.id == export_id, DataExport.user_id == user.id)
    )
    if export is None:
        raise errors.NotFound("No such export.")
    return export


async def build_pending(db: Database, *, settings: Settings, limit: int = 10) -> list[str]:
    """Build waiting exports, oldest first; the ids built (or failed)."""
    built: list[str] = []
    while len(built) < limit and (export_id := await _claim(db)) is not None:
        await _build(db, settings=settings, export_id=export_id)
        built.append(export_id)
    return built


async def _claim(db: Database) -> str | None:
    """The oldest waiting export, now ours; looked for with a read, so a scheduler tick
    with nothing to build takes no write lock."""
    now = utcnow()
    waiting = or_(
        DataExport.status == PENDING,
        (DataExport.status == BUILDING) & (DataExport.started_at < now - STALE_BUILD),
    )
    async with db.session(write=False) as session:
        candidate = await session.scalar(
            select(DataExport.id).where(waiting).order_by(DataExport.requested_at).limit(1)
        )
    if candidate is None:
        return None
    async with db.session(write=True) as session, session.begin():
        claimed = await session.execute(
            update(DataExport)
            .where(DataExport.id == candidate, waiting)
            .values(status=BUILDING, started_at=now)
        )
        return candidate if rowcount(claimed) else None


async def _build(db: Database, *, settings: Settings, export_id: str) -> None:
    try:
        async with db.session(write=False) as session:
            export = await session.get(DataExport, export_id)
            user = await session.get(User, export.user_id) if export else None
            if export is None or user is None:
                return  # the account was erased meanwhile, and its export with it
            document = await privacy.collect(session, user=user)
        raw = orjson.dumps(jsonvalues.storable(document))  # an old row's huge int too
        sealed = db.key_ring.encrypt(gzip.compress(raw, compresslevel=6)).decode()
    except Exception as exc:
        log.exception("export_failed", export_id=export_id)
        await _finish(db, export_id, status=FAILED, error=f"{type(exc).__name__}: {exc}"[:500])
        return
    now = utcnow()
    await _finish(
        db,
        export_id,
        status=READY,
        finished_at=now,
        expires_at=now + timedelta(seconds=settings.export_link_ttl_s),
        size_bytes=len(raw),
        document_encrypted=sealed,
        actor=user.id,
    )
    log.info("export_ready", export_id=export_id, size_bytes=len(raw))


async def _finish(db: Database, export_id: str, *, actor: str = "system", **values: Any) -> None:
    async with db.session(write=True) as session, session.begin():
        export = await session.get(DataExport, export_id)
        if export is None or export.status != BUILDING:
            return
        for name, value in values.items():
            setattr(export, name, value)
        action = "data_exported" if values["status"] == READY else "data_export_failed"
        await audit.record(session, actor=actor, action=action, object_id=export.user_id)


# --- signed links ----------------------------------------------------------------------


def _signature(key: str, export_id: str, expires: int) -> str:
    message = f"export:{export_id}:{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def download_path(key: str, export: DataExport) -> str:
    assert export.expires_at is not None
    expires = int(export.expires_at.timestamp())
    signature = _signature(key, export.id, expires)
    return f"/api/v1/me/exports/{export.id}/download?expires={expires}&signature={signature}"


def download_url(public_url: str, key: str, export: DataExport) -> str | None:
    """The signed link of a ready export (None before it is)."""
    if export.status != READY:
        return None
    return public_url.rstrip("/") + download_path(key, export)


@dataclass(frozen=True)
class Download:
    export_id: str
    gzipped_json: bytes

    @property
    def json(self) -> bytes:
        return gzip.decompress(self.gzipped_json)


async def fetch(
    session: AsyncSession, *, key: str, export_id: str, expires: int, signature: str
) -> Download:
    """The export a signed link names: 403 for a link we did not sign, 410 once it
    expired (the row may be gone by then; the signed expiry still tells)."""
    expected = _signature(key, export_id, expires)
    if not hmac.compare_digest(signature.encode(), expected.encode()):  # any text, no TypeError
        raise errors.Forbidden("This download link is not valid.")
    if expires <= utcnow().timestamp():
        raise errors.Gone("This download link has expired; ask for a new export.")
    export = await session.get(DataExport, export_id)
    if export is None or export.status != READY or export.document_encrypted is None:
        raise errors.Gone("This export is no longer available; ask for a new one.")
    ring = key_ring(session.get_bind().dialect)
    return Download(export.id, ring.decrypt(export.document_encrypted.encode()))


async def prune(session: AsyncSession, *, now: datetime) -> int:
    """Delete exports past their expiry, and failed ones a day old."""
    result = await session.execute(
        delete(DataExport).where(
            or_(
                DataExport.expires_at < now,
                (DataExport.status == FAILED) & (DataExport.requested_at < now - timedelta(days=1)),
            )
        )
    )
    return rowcount(result)
