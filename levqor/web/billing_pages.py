"""The dashboard's billing page: buy a pack or a plan through Stripe Checkout, manage the
subscription in Stripe's portal, and the credit ledger.

The CSP's `form-action 'self'` also governs where a form's answer may redirect, so a form
here never redirects to Stripe: it answers a page with the link to continue there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse

from levqor import errors
from levqor.billing import plans
from levqor.billing import service as billing
from levqor.deps import ReadSessionDep, RuntimeDep
from levqor.web import csrf
from levqor.web.rendering import render
from levqor.web.session import Owner

router = APIRouter(prefix="/app", include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]


@router.get("/billing", response_class=HTMLResponse)
async def billing_page(
    request: Request, owner: Owner, session: ReadSessionDep, runtime: RuntimeDep
) -> HTMLResponse:
    return render(
        request,
        "app_billing.html",
        {
            "user": owner,
            "plans": [plan for plan in plans.PLANS.values() if plan.price_cents],
            "packs": list(plans.PACKS.values()),
            "currency": runtime.settings.billing_currency,
            "ledger": await billing.ledger(session, user_id=owner.id, limit=20),
            "noindex": True,
        },
    )


@router.post("/billing/checkout", response_class=HTMLResponse)
async def checkout(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    runtime: RuntimeDep,
    plan: Annotated[str | None, Form(max_length=64)] = None,
    pack: Annotated[str | None, Form(max_length=64)] = None,
) -> HTMLResponse:
    """A Stripe Checkout session; the page links to it (credits come with the webhook)."""
    try:
        _session_id, url = await billing.checkout(runtime, user=owner, plan=plan, pack=pack)
    except errors.LevqorError as exc:
        context = {"problem": exc.detail, "noindex": True}
        return render(request, "app_stripe.html", context, status_code=exc.status)
    context = {"url": url, "what": "pay on Stripe's secure checkout", "noindex": True}
    return render(request, "app_stripe.html", context)


@router.post("/billing/portal", response_class=HTMLResponse)
async def portal(request: Request, _csrf: Csrf, owner: Owner, runtime: RuntimeDep) -> HTMLResponse:
    try:
        url = await billing.portal(runtime, user=owner)
    except errors.LevqorError as exc:
        context = {"problem": exc.detail, "noindex": True}
        return render(request, "app_stripe.html", context, status_code=exc.status)
    context = {"url": url, "what": "manage your plan in Stripe's portal", "noindex": True}
    return render(request, "app_stripe.html", context)
