"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from levqor import __version__
from levqor.accounts.api_deps import AdminUser, client_ip
from levqor.billing import reports
from levqor.deps import ReadSessionDep, RuntimeDep
from levqor.errors import PROBLEM_JSON, Forbidden, Unauthorized, problem
from levqor.ops import alerts, service
from levqor.partners import service as partners
from levqor.types import Cursor, Limit, Page

router = APIRouter(tags=["health"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"ok": True, "version": __version__}


@router.get("/ready", responses={503: {"description": "A dependency failed"}})
async def ready(runtime: RuntimeDep) -> Response:
    state = await service.readiness(runtime)
    if state.ok:
        return JSONResponse({"ok": True, "checks": state.checks})
    failed = ", ".join(name for name, result in state.checks.items() if result != "ok")
    body = problem(503, "not_ready", f"Not ready: {failed} failed.", checks=state.checks)
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus text. With `LEVQOR_METRICS_TOKEN` set, the token is required; without
    it, only this machine may read (the counts tell the world how busy we are)."""
    token = runtime.settings.metrics_token
    if token is None:
        if not _from_this_machine(client_ip(request)):
            raise Forbidden("Set LEVQOR_METRICS_TOKEN to read the metrics from elsewhere.")
    else:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthorized("A valid metrics token is required.")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _from_this_machine(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@admin_router.get("/revenue")
async def revenue(
    _admin: AdminUser, session: ReadSessionDep, runtime: RuntimeDep
) -> reports.Revenue:
    """MRR and ARR (live subscriptions at their plan's price), paying users (a plan
    billing, or a payment in the last 30 days), net revenue, the conversion funnel
    (signups, activated, paying, subscribed) and partner commission."""
    return await reports.revenue(
        session,
        settings=runtime.settings,
        partner_commission_cents=await partners.commission_totals(session),
    )


class DeliveryRead(BaseModel):
    channel: str
    status: str = Field(description="pending (being tried), sent or failed (gave up)")
    attempts: int
    error: str | None
    sent_at: datetime | None


class AlertRead(BaseModel):
    id: str
    severity: str = Field(description="critical, warning, info or resolved")
    title: str
    body: str
    key: str | None = Field(description="The condition or event it is about, if any.")
    repeats: int = Field(description="Times it was raised again and not re-sent.")
    created_at: datetime
    resolved_at: datetime | None
    channels: list[DeliveryRead]


@admin_router.get("/alerts")
async def alert_history(
    _admin: AdminUser, session: ReadSessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[AlertRead]:
    """Alerts, newest first, each with the channels tried and their outcome."""
    found, next_cursor = await alerts.page(session, limit=limit, cursor=cursor)
    return Page(
        data=[
            AlertRead(
                **{
                    name: getattr(alert, name)
                    for name in AlertRead.model_fields
                    if name != "channels"
                },
                channels=[DeliveryRead.model_validate(d, from_attributes=True) for d in deliveries],
            )
            for alert, deliveries in found
        ],
        next_cursor=next_cursor,
    )
