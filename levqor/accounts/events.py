"""Security events of an account, written to the audit log (`compliance.audit`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.compliance import audit


async def record_event(
    session: AsyncSession, *, user_id: str | None, kind: str, detail: dict[str, str] | None = None
) -> None:
    await audit.record(
        session, actor=user_id or "anonymous", action=kind, object_id=user_id, detail=detail
    )
