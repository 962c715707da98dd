"""The dashboard's privacy page: download my data, marketing e-mail, delete my account;
and usage (credits and runs a day)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from levqor import errors
from levqor.compliance import exports, privacy
from levqor.compliance import service as compliance
from levqor.db.base import utcnow
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.jobs import queue
from levqor.web import csrf
from levqor.web import session as web_session
from levqor.web.charts import bar_chart
from levqor.web.rendering import redirect, render
from levqor.web.session import Owner

router = APIRouter(prefix="/app", include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]
MARKETING = "marketing_email"
USAGE_DAYS = 30


@router.get("/privacy", response_class=HTMLResponse)
async def privacy_page(
    request: Request, owner: Owner, session: ReadSessionDep, problem: str | None = None
) -> HTMLResponse:
    consent = await compliance.current_consent(session, user_id=owner.id, kind=MARKETING)
    context = {"user": owner, "marketing": consent, "problem": problem, "noindex": True}
    return render(request, "privacy.html", context)


@router.post("/privacy/export")
async def export_my_data(
    request: Request, _csrf: Csrf, owner: Owner, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Everything about me as a JSON file; a large account's is built in the background
    and its signed link shown here when ready."""
    if await privacy.count_rows(session, user=owner) > runtime.settings.export_inline_max_rows:
        await exports.request(session, user=owner, now=utcnow())
        context = {"building": True, "noindex": True, "user": owner}
        return render(request, "privacy.html", context, status_code=202)
    document = await privacy.export(session, user=owner, actor=owner.id)
    body = json.dumps(document, ensure_ascii=False, indent=2, default=str)
    return Response(
        body,
        media_type="application/json",
        headers={"content-disposition": 'attachment; filename="levqor-my-data.json"'},
    )


@router.post("/privacy/marketing")
async def marketing(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    granted: Annotated[bool, Form()] = False,
) -> Response:
    await compliance.record_consent(
        session, user_id=owner.id, kind=MARKETING, granted=granted, source="dashboard"
    )
    return redirect(request, "/app/privacy")


@router.post("/privacy/delete")
async def delete_account(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    runtime: RuntimeDep,
    password: Annotated[str, Form(min_length=1, max_length=1024)],
) -> Response:
    """Erase the account (its password confirms it); then signed out, on the home page."""
    try:
        await privacy.erase_account(runtime, user_id=owner.id, password=password)
    except errors.LevqorError as exc:
        context = {"user": owner, "problem": exc.detail, "noindex": True}
        return render(request, "privacy.html", context, status_code=exc.status)
    web_session.signed_out(request)
    return redirect(request, "/?erased=1")


@router.get("/usage", response_class=HTMLResponse)
async def usage(request: Request, owner: Owner, session: ReadSessionDep) -> HTMLResponse:
    runs = await queue.runs_per_day(session, days=USAGE_DAYS, now=utcnow(), user_id=owner.id)
    chart = bar_chart("Your runs a day", "runs", [(day.isoformat(), n) for day, n in runs])
    context = {"user": owner, "chart": chart, "total": sum(n for _, n in runs), "noindex": True}
    return render(request, "usage.html", context)
