"""The dashboard's partner page: join, the referral link, the funnel, commission and
payouts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from levqor import errors
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.partners import service as partners
from levqor.web import csrf
from levqor.web.rendering import redirect, render
from levqor.web.session import Owner

router = APIRouter(prefix="/app", include_in_schema=False)
PROBLEMS = {  # what a failed trip to Stripe's onboarding says on the page
    "billing_not_configured": "Payouts are not set up on this server (Stripe is not configured).",
    "stripe_error": "Stripe did not answer; try again in a minute.",
}
Csrf = Annotated[None, Depends(csrf.verify)]


@router.get("/partner", response_class=HTMLResponse)
async def partner_page(
    request: Request, owner: Owner, session: ReadSessionDep, runtime: RuntimeDep
) -> HTMLResponse:
    try:
        summary = await partners.summary(session, user_id=owner.id, settings=runtime.settings)
    except partners.NotPartner:
        summary = None
    context = {
        "summary": summary,
        "currency": runtime.settings.billing_currency,
        "problem": PROBLEMS.get(request.query_params.get("problem") or ""),
    }
    return render(request, "partner.html", {**context, "noindex": True})


@router.post("/partner", response_class=HTMLResponse)
async def join(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    try:
        await partners.join(session, user_id=owner.id, settings=runtime.settings)
    except errors.LevqorError as exc:
        context = {"summary": None, "problem": exc.detail, "noindex": True}
        return render(request, "partner.html", context, status_code=exc.status)
    return redirect(request, "/app/partner")


@router.post("/partner/connect", response_class=HTMLResponse)
async def connect(request: Request, _csrf: Csrf, owner: Owner, runtime: RuntimeDep) -> Response:
    """Off to Stripe's onboarding for the partner's payout account."""
    try:
        link = await partners.connect(runtime, user_id=owner.id)
    except errors.LevqorError as exc:
        return redirect(request, f"/app/partner?problem={exc.code}")
    return RedirectResponse(link.url, status_code=303)
