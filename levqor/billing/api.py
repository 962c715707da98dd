"""Billing routes: thin; parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from levqor.accounts.api_deps import CurrentUser
from levqor.billing import service
from levqor.deps import ReadSessionDep

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])


class CreditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    delta: int
    balance_after: int
    reason: str
    job_id: str | None


class LedgerPage(BaseModel):
    data: list[CreditEntryRead]
    next_cursor: str | None


@router.get("/ledger")
async def ledger(
    principal: CurrentUser,
    session: ReadSessionDep,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, pattern="^[0-9]{1,19}$"),
) -> LedgerPage:
    """Your credit ledger, newest first: every grant, purchase and run that changed your
    balance, with the balance it left."""
    entries = await service.ledger(
        session,
        user_id=principal.user.id,
        before=int(cursor) if cursor else None,
        limit=limit + 1,
    )
    page = entries[:limit]
    more = len(entries) > limit
    return LedgerPage(
        data=[CreditEntryRead.model_validate(entry) for entry in page],
        next_cursor=str(page[-1].id) if more else None,
    )
