"""The dashboard's partner page: join, the referral link, the funnel, commission and
payouts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from levqor import errors
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.partners import service as partners
from levqor.web import csrf
from levqor.web.rendering import redirect, render
from levqor.web.session import Owner

router = APIRouter(prefix="/app", include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]


@router.get("/partner", response_class=HTMLResponse)
async def partner_page(
    request: Request, owner: Owner, session: ReadSessionDep, runtime: RuntimeDep
) -> HTMLResponse:
    try:
        summary = await partners.summary(session, user_id=owner.id, settings=runtime.settings)
    except partners.NotPartner:
        summary = None
    context = {"summary": summary, "currency": runtime.settings.billing_currency}
    return render(request, "partner.html", {**context, "noindex": True})


@router.post("/partner", response_class=HTMLResponse)
async def join(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
    payout_account: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    try:
        await partners.join(
            session,
            user_id=owner.id,
            settings=runtime.settings,
            payout_account=payout_account.strip() or None,
        )
    except errors.LevqorError as exc:
        context = {"summary": None, "problem": exc.detail, "noindex": True}
        return render(request, "partner.html", context, status_code=exc.status)
    return redirect(request, "/app/partner")
