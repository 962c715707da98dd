"""The operator's dashboard (`/admin`, admins only): revenue, costs, the queue, the spend
guard and the audit log, with charts as SVG."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from levqor import errors
from levqor.accounts.models import ROLE_ADMIN
from levqor.audit import service as audit
from levqor.billing import refunds, reports, spend_guard
from levqor.db.base import utcnow
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.jobs import queue
from levqor.ops import alerts, anomalies, backups, channels, slo
from levqor.partners import fraud
from levqor.partners import service as partners
from levqor.web import csrf
from levqor.web.charts import bar_chart
from levqor.web.rendering import redirect, render
from levqor.web.session import Owner

router = APIRouter(prefix="/admin", include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]
DAYS = 30
MRR_DAYS = 90


def forbidden(request: Request) -> HTMLResponse:
    context = {"what": "page for you", "noindex": True}
    return render(request, "not_found.html", context, status_code=403)


@router.get("", response_class=HTMLResponse)
async def dashboard(
    request: Request,
    owner: Owner,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    if owner.role != ROLE_ADMIN:
        return forbidden(request)
    settings, now = runtime.settings, utcnow()
    days = await reports.daily(session, settings=settings, days=DAYS)
    runs = await queue.runs_per_day(session, days=DAYS, now=now)
    beat = timedelta(seconds=settings.worker_heartbeat_s * 3)
    spent, spenders = await spend_guard.today(session)
    entries, _ = await audit.page(session, actor=actor or None, action=action or None, limit=50)
    per_unit = 100.0  # cents in a currency unit
    history = await reports.mrr_history(session, days=MRR_DAYS)
    return render(
        request,
        "admin.html",
        {
            "revenue": await reports.revenue(
                session,
                settings=settings,
                partner_commission_cents=await partners.commission_totals(session),
            ),
            "costs": await reports.costs(session, settings=settings),
            "days": days,
            "revenue_chart": bar_chart(
                "Revenue a day",
                settings.billing_currency.upper(),
                [(day.day.isoformat(), day.revenue_cents / per_unit) for day in days],
            ),
            "costs_chart": bar_chart(
                "Costs a day",
                settings.billing_currency.upper(),
                [(day.day.isoformat(), day.costs_cents / per_unit) for day in days],
            ),
            "runs_chart": bar_chart("Runs a day", "runs", [(d.isoformat(), n) for d, n in runs]),
            "mrr_history": history,
            "mrr_chart": bar_chart(
                "MRR at the end of each day",
                settings.billing_currency.upper(),
                [(each.day.isoformat(), each.mrr_cents / per_unit) for each in history],
            )
            if history
            else None,
            "queue": await queue.stats(session, now=now, alive_since=now - beat),
            "spent_micro_usd": spent,
            "spenders": spenders,
            "server_paused": await spend_guard.paused(session, user_id=None),
            "audit": entries,
            "audit_filter": {"actor": actor or "", "action": action or ""},
            "refunds": await refunds.recent(session, limit=20),
            "alerts": (await alerts.page(session, limit=10))[0],
            "slo": await slo.state(session, settings),
            "anomalies": (await anomalies.page(session, limit=10))[0],
            "backups": await backups.listed(runtime.db, limit=10),
            "alert_channels": sorted(channels.configured(settings)),
            "payouts": await partners.recent_payouts(session, limit=20),
            "flagged": await fraud.referrals(session, status=fraud.FLAGGED, limit=50),
            "noindex": True,
        },
    )


@router.post("/payouts/run")
async def run_payouts(request: Request, _csrf: Csrf, owner: Owner, runtime: RuntimeDep) -> Response:
    """Pay every partner whose payable commission reaches the minimum (Stripe transfers)."""
    if owner.role != ROLE_ADMIN:
        return forbidden(request)
    await partners.run_payouts(runtime, actor=owner.id)
    return redirect(request, "/admin#payouts")


@router.post("/referrals/{referral_id}/{verdict}")
async def decide_referral(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    referral_id: Annotated[str, Path(max_length=64)],
    verdict: Literal["approve", "reject"],
) -> Response:
    """A flagged referral approved (its held commission becomes payable) or rejected
    (void), from the fraud guard's section."""
    if owner.role != ROLE_ADMIN:
        return forbidden(request)
    # Decided meanwhile (in another tab): nothing changes, the section shows what stands.
    with contextlib.suppress(errors.NotFound, fraud.NotFlagged):
        await fraud.decide(
            session, user_id=referral_id, approve=verdict == "approve", admin_id=owner.id
        )
    return redirect(request, "/admin#referrals")


@router.post("/spend-guard/resume")
async def resume_spending(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    user_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Lift the LLM pause of one user (`user_id`) or, without one, the server's, before
    midnight (one more day's limit)."""
    if owner.role != ROLE_ADMIN:
        return forbidden(request)
    await spend_guard.resume(session, user_id=user_id or None, actor=owner.id)
    return redirect(request, "/admin#spend-guard")
