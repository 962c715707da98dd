"""Unsubscribe (RFC 8058): one-click by POST, a confirmation page on GET; and the audit
log for admins.

No login: the signed token is the authority. GET never unsubscribes anyone (mail
scanners follow links); it shows a page whose button POSTs. Mail clients send the
one-click POST themselves (`List-Unsubscribe=One-Click`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from levqor.accounts.api_deps import AdminUser, CurrentUser
from levqor.compliance import audit, privacy, service
from levqor.deps import RuntimeDep, SessionDep
from levqor.web.pages import templates

router = APIRouter(include_in_schema=False)
Token = Query(min_length=10, max_length=500)


@router.get("/unsubscribe", response_class=HTMLResponse)
async def confirm(request: Request, runtime: RuntimeDep, token: str = Token) -> HTMLResponse:
    valid = service.read_unsubscribe_token(_key(runtime), token) is not None
    return templates.TemplateResponse(
        request,
        "unsubscribe.html",
        {"state": "confirm" if valid else "invalid", "token": token},
        status_code=200 if valid else 400,
    )


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(
    request: Request, runtime: RuntimeDep, session: SessionDep, token: str = Token
) -> HTMLResponse:
    found = service.read_unsubscribe_token(_key(runtime), token)
    if found is not None:
        await service.unsubscribe(session, found)
    return templates.TemplateResponse(
        request,
        "unsubscribe.html",
        {"state": "done" if found else "invalid", "token": token},
        status_code=200 if found else 400,
    )


def _key(runtime: RuntimeDep) -> str:
    key = runtime.settings.blind_index_key
    assert key is not None  # load_settings always fills it
    return key.get_secret_value()


admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class AuditRead(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_id: str | None
    ip_hash: str | None
    detail: dict[str, Any]
    hash: str


@admin_router.get("/audit")
async def audit_log(
    _admin: AdminUser,
    session: SessionDep,
    actor: str | None = Query(None, max_length=64),
    action: str | None = Query(None, max_length=64),
    since: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[AuditRead]:
    """The audit log, newest first, filtered by actor, action and time."""
    entries = await audit.search(session, actor=actor, action=action, since=since, limit=limit)
    return [AuditRead.model_validate(entry, from_attributes=True) for entry in entries]


me_router = APIRouter(prefix="/api/v1/me", tags=["privacy"])


class EraseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="Your current password.")


@me_router.get("/export")
async def export_my_data(
    principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Every record about you, from every table, with what it is used for."""
    return await privacy.export(session, user=principal.user, actor=principal.user.id)


@me_router.delete("", status_code=204)
async def erase_me(
    body: EraseIn, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Delete your account and everything personal about it, for good."""
    await privacy.erase_confirmed(
        session, user=principal.user, kit=runtime.auth, password=body.password
    )
    return Response(status_code=204)
