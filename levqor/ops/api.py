"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress
import time
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from levqor import __version__
from levqor.accounts.api_deps import AdminUser, client_ip
from levqor.billing import reports
from levqor.db.base import utcnow
from levqor.deps import Cursor, Limit, ReadSessionDep, RuntimeDep
from levqor.errors import PROBLEM_JSON, Forbidden, Unauthorized, problem
from levqor.jobs import queue
from levqor.ops import alerts, anomalies, backups, service, slo
from levqor.partners import service as partners
from levqor.types import Page

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
async def metrics(request: Request, runtime: RuntimeDep, session: ReadSessionDep) -> Response:
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
    return Response(
        service.process_metrics(runtime.settings)
        + await service.database_metrics(session, runtime.settings),
        media_type=CONTENT_TYPE_LATEST,
    )


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


class SloRead(BaseModel):
    status: str = Field(description="ok, breaching (this window) or breached (alert open)")
    requests: int = Field(description="API requests in the window, every process")
    p95_ms: float | None = Field(description="null with no request in the window")
    error_rate: float = Field(description="the share of 5xx answers")
    target_p95_ms: float
    target_error_rate: float
    window_s: int
    breaches_in_a_row: int = Field(description="breaching checks in a row (one a minute)")


@admin_router.get("/slo")
async def slo_state(_admin: AdminUser, session: ReadSessionDep, runtime: RuntimeDep) -> SloRead:
    """The API's p95 latency and 5xx share over the SLO window, against the SLO."""
    now = await slo.state(session, runtime.settings)
    return SloRead(
        status=now.status, **{k: v for k, v in vars(now).items() if k in SloRead.model_fields}
    )


public_router = APIRouter(prefix="/public", tags=["health"])
PUBLIC_CACHE_S = 60


@public_router.get("/metrics")
async def public_metrics(
    request: Request, session: ReadSessionDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """For a status page: the share of the last 7 days' SLO checks that met the SLO,
    runs started today (UTC), and the API's current p95. No secrets; cached a minute
    (per process: a status page polling it costs one query a minute)."""
    cached: tuple[float, dict[str, Any]] | None = getattr(request.app.state, "public_metrics", None)
    if cached is not None and time.monotonic() - cached[0] < PUBLIC_CACHE_S:
        return cached[1]
    body = await slo.public_numbers(session, runtime.settings)
    request.app.state.public_metrics = (time.monotonic(), body)
    return body


class WorkerRead(BaseModel):
    id: str
    host: str
    pid: int
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool = Field(description="beat within the last three heartbeats")


class QueueRead(BaseModel):
    by_status: dict[str, int] = Field(description="jobs by status")
    oldest_waiting_s: float | None = Field(description="how long the longest-due job has waited")
    dead_letters: int = Field(description="failed jobs, waiting to be replayed")
    workers: list[WorkerRead]


@admin_router.get("/queue")
async def queue_state(_admin: AdminUser, session: ReadSessionDep, runtime: RuntimeDep) -> QueueRead:
    """Depth by status, the age of the oldest waiting job, the dead letters, and every
    worker seen with its last heartbeat."""
    now = utcnow()
    alive_since = now - timedelta(seconds=runtime.settings.worker_heartbeat_s * 3)
    stats = await queue.stats(session, now=now, alive_since=alive_since)
    return QueueRead(
        by_status=stats.by_status,
        oldest_waiting_s=stats.oldest_waiting_s,
        dead_letters=stats.by_status.get("failed", 0),
        workers=[
            WorkerRead(**vars(worker), alive=worker.heartbeat_at >= alive_since)
            for worker in await queue.workers_seen(session)
        ],
    )


class BackupRead(BaseModel):
    id: str
    created_at: datetime
    backend: str
    status: str = Field(description="ok, or failed (with `error`)")
    error: str | None
    size_bytes: int
    took_s: float
    manifest_sha256: str | None
    offsite: dict[str, str] = Field(description="each off-site copy: ok, or why not")
    verified_at: datetime | None
    verify_ok: bool | None = Field(description="null until verified")
    verify_error: str | None
    verify_took_s: float | None


@admin_router.get("/backups")
async def backup_catalogue(_admin: AdminUser, runtime: RuntimeDep) -> list[BackupRead]:
    """Backups, newest first, with size, manifest checksum and the last verification."""
    return [
        BackupRead.model_validate(backup, from_attributes=True)
        for backup in await backups.listed(runtime.db)
    ]


class AnomalyRead(BaseModel):
    id: int
    series: str = Field(
        description="runs, failures, signups, api_5xx, llm_spend, refunds, failure_ratio"
    )
    hour: datetime = Field(description="the start of the hour judged")
    value: float
    expected_low: float
    expected_high: float
    score: float = Field(
        description="standard or robust deviations (a share's jump for failure_ratio)"
    )
    method: str = Field(description="zscore, robust or ratio")
    found_at: datetime


@admin_router.get("/anomalies")
async def anomaly_list(
    _admin: AdminUser, session: ReadSessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[AnomalyRead]:
    """Anomalies found in the hourly series, newest first."""
    found, next_cursor = await anomalies.page(session, limit=limit, cursor=cursor)
    return Page(
        data=[AnomalyRead.model_validate(each, from_attributes=True) for each in found],
        next_cursor=next_cursor,
    )
