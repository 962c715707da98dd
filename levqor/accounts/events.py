"""Security events: what happened to an account, for the account's owner and auditors."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.models import SecurityEvent


async def record_event(
    session: AsyncSession, *, user_id: str | None, kind: str, detail: dict[str, str] | None = None
) -> None:
    session.add(SecurityEvent(user_id=user_id, kind=kind, detail=detail or {}))
    await session.flush()
