"""The audit log for admins, and a user's own data: export and erasure. (The
unsubscribe page, a page, is in `web.pages`.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from levqor import errors
from levqor.accounts.api_deps import AdminUser, CurrentUser, CurrentUserAutocommit
from levqor.audit import service as audit
from levqor.compliance import exports, privacy
from levqor.compliance.models import DataExport
from levqor.db.base import utcnow
from levqor.deps import Cursor, Limit, ReadSessionDep, RuntimeDep, SessionDep
from levqor.runtime import Runtime
from levqor.types import IsoDatetime, Page


def _key(runtime: Runtime) -> str:
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
    since: IsoDatetime | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AuditRead]:
    """The audit log, newest first, filtered by actor, action and time."""
    entries, next_cursor = await audit.page(
        session, actor=actor, action=action, since=since, limit=limit, cursor=cursor
    )
    return Page(
        data=[AuditRead.model_validate(entry, from_attributes=True) for entry in entries],
        next_cursor=next_cursor,
    )


me_router = APIRouter(prefix="/api/v1/me", tags=["privacy"])


class EraseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="Your current password.")


class ExportRead(BaseModel):
    id: str
    status: str = Field(description="pending, building, ready or failed")
    requested_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    size_bytes: int | None
    download_url: str | None = Field(description="A signed link, valid until `expires_at`.")


def _export_read(export: DataExport, runtime: Runtime) -> ExportRead:
    return ExportRead(
        id=export.id,
        status=export.status,
        requested_at=export.requested_at,
        finished_at=export.finished_at,
        expires_at=export.expires_at,
        size_bytes=export.size_bytes,
        download_url=exports.download_url(runtime.settings.public_url, _key(runtime), export),
    )


def _accepted(export: DataExport, runtime: Runtime) -> JSONResponse:
    body = _export_read(export, runtime).model_dump(mode="json")
    return JSONResponse(
        body, status_code=202, headers={"Location": f"/api/v1/me/exports/{export.id}"}
    )


@me_router.get(
    "/export",
    responses={202: {"model": ExportRead, "description": "Too large: built in the background."}},
)
async def export_my_data(principal: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> Any:
    """Every record about you, from every table, with what it is used for. A large
    export is built in the background: 202 and where to watch for its download link."""
    user = principal.user
    if await privacy.count_rows(session, user=user) > runtime.settings.export_inline_max_rows:
        return _accepted(await exports.request(session, user=user, now=utcnow()), runtime)
    return await privacy.export(session, user=user, actor=user.id)


@me_router.post("/exports", status_code=202)
async def request_export(
    principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """Build your export in the background, whatever its size."""
    return _accepted(await exports.request(session, user=principal.user, now=utcnow()), runtime)


@me_router.get("/exports/{export_id}")
async def export_status(
    export_id: str, principal: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep
) -> ExportRead:
    export = await exports.get(session, user=principal.user, export_id=export_id)
    return _export_read(export, runtime)


@me_router.get(
    "/exports/{export_id}/download",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "The export document."},
        **errors.documented(403, 410),
    },
)
async def download_export(
    export_id: str,
    request: Request,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    expires: int = Query(ge=0, le=2**40),
    signature: str = Query(pattern="^[0-9a-f]{64}$"),
) -> Response:
    """The export document, through the signed link (no login needed until it expires)."""
    found = await exports.fetch(
        session, key=_key(runtime), export_id=export_id, expires=expires, signature=signature
    )
    headers = {
        "Content-Disposition": f'attachment; filename="levqor-export-{found.export_id}.json"',
        "Cache-Control": "private, no-store",
        "Vary": "Accept-Encoding",
    }
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped_json, media_type="application/json", headers=headers)
    return Response(found.json, media_type="application/json", headers=headers)


@me_router.delete("", status_code=204)
async def erase_me(
    body: EraseIn, principal: CurrentUserAutocommit, runtime: RuntimeDep
) -> Response:
    """Delete your account and everything personal about it, for good; a plan
    subscription is cancelled at Stripe. Invoices, payments and the ledger stay, under a
    random tombstone id, as tax law requires."""
    await privacy.erase_account(runtime, user_id=principal.user.id, password=body.password)
    return Response(status_code=204)
