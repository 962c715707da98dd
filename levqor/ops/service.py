"""Health and readiness checks, and what /metrics says."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest, multiprocess
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.billing import spend_guard
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.models import STATUSES
from levqor.ops import alerts, backups
from levqor.runtime import Runtime

CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(state == "ok" for state in self.checks.values())


async def readiness(runtime: Runtime) -> Readiness:
    checks = {"database": await _check_database(runtime)}
    if runtime.redis is not None:
        checks["redis"] = await _check_redis(runtime)
    return Readiness(checks)


async def _check_database(runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), runtime.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  any failure means "not ready", named
        return f"failed: {type(exc).__name__}"
    return "ok"


async def _check_redis(runtime: Runtime) -> str:
    assert runtime.redis is not None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await runtime.redis.ping()
    except Exception as exc:  # noqa: BLE001  any failure means "not ready", named
        return f"failed: {type(exc).__name__}"
    return "ok"


def process_metrics(settings: Settings) -> bytes:
    """This process's counters and histograms; under `levqor serve`, every process's,
    added up (prometheus-client's multi-process mode)."""
    if settings.prometheus_multiproc_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.prometheus_multiproc_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def database_metrics(session: AsyncSession, settings: Settings) -> bytes:
    """What the database knows, read at each scrape: the same from any process, so kept
    out of the per-process registry."""
    registry = CollectorRegistry()
    now = utcnow()
    stats = await queue.stats(
        session, now=now, alive_since=now - timedelta(seconds=settings.worker_heartbeat_s * 3)
    )
    depth = Gauge("levqor_queue_jobs", "Jobs by status.", ["status"], registry=registry)
    for status in STATUSES:
        depth.labels(status).set(stats.by_status.get(status, 0))
    Gauge(
        "levqor_queue_oldest_waiting_seconds",
        "How long the longest-due waiting job has waited (0 when none waits).",
        registry=registry,
    ).set(stats.oldest_waiting_s or 0)
    Gauge("levqor_workers_alive", "Workers that beat recently.", registry=registry).set(
        stats.workers_alive
    )
    Gauge(
        "levqor_spend_guard_paused",
        "1 while the spend guard pauses every LLM call on the server.",
        registry=registry,
    ).set(int(await spend_guard.paused(session, user_id=None)))
    Gauge("levqor_alerts_open", "Alerted conditions not yet resolved.", registry=registry).set(
        await alerts.open_count(session)
    )
    age = await backups.newest_verified_age_s(session)
    if age is not None:  # no series before the first verified backup
        Gauge(
            "levqor_backup_newest_verified_age_seconds",
            "Age of the newest backup that passed its verification.",
            registry=registry,
        ).set(age)
    return generate_latest(registry)
