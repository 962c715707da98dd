"""Security events of an account, written to the audit log (`levqor.audit`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.audit import service as audit


async def record_event(
    session: AsyncSession, *, user_id: str | None, kind: str, detail: dict[str, str] | None = None
) -> None:
    await audit.record(
        session, actor=user_id or "anonymous", action=kind, object_id=user_id, detail=detail
    )
