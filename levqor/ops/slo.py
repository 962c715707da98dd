"""The API's SLO: p95 latency and the share of 5xx answers over a sliding window, judged
against `LEVQOR_SLO_*`, without a Prometheus server and across several `serve` processes.

Each serving process counts its API requests (`/api/…`, `/hooks/…`) in 10-second slots
(`LatencyMiddleware` into a `Recorder`): a histogram of latencies, the 5xx answers, the
slowest. A background task writes each finished slot as one `request_stats` row. The
scheduler's check (`check`, about once a minute) adds up every process's slots in the
window, records the verdict in `slo_checks`, and after `LEVQOR_SLO_BREACH_CHECKS`
breaching checks in a row raises one critical alert; the first good check resolves it.

p95 from histogram buckets is the upper bound of the bucket holding the 95th percentile
(never below the truth, at most one bucket above it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor import metrics
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.jobs import queue
from levqor.logging import get_logger
from levqor.ops import alerts
from levqor.ops.models import RequestStats, SloCheck
from levqor.periodic import TickTask, at_most_every

log = get_logger(__name__)

BOUNDS_MS = (
    5,
    10,
    25,
    50,
    75,
    100,
    150,
    200,
    250,
    300,
    400,
    500,
    750,
    1000,
    1500,
    2500,
    5000,
    10000,
)
SLOT_S = 10
FLUSH_EVERY_S = 5
KEEP_STATS = timedelta(days=8)  # the anomaly detector reads a week of hourly 5xx
KEEP_CHECKS = timedelta(days=8)
SLO_KEY = "slo"
MEASURED = ("/api/", "/hooks/")  # what the SLO judges
UNMEASURED = ("/metrics", "/static/")


@dataclass
class Slot:
    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))
    max_ms: float = 0.0

    def add(self, ms: float, status: int) -> None:
        self.requests += 1
        self.errors += status >= 500
        self.max_ms = max(self.max_ms, ms)
        for index, bound in enumerate(BOUNDS_MS):
            if ms <= bound:
                self.buckets[index] += 1
                return
        self.buckets[-1] += 1


class Recorder:
    """This process's requests, by slot, until they are written."""

    def __init__(self) -> None:
        self.process = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.slots: dict[int, Slot] = {}

    def record(self, ms: float, status: int, at: float | None = None) -> None:
        slot = int((at if at is not None else time.time()) // SLOT_S)
        self.slots.setdefault(slot, Slot()).add(ms, status)

    def take_finished(self, *, everything: bool = False) -> dict[int, Slot]:
        current = int(time.time() // SLOT_S)
        done = {key: slot for key, slot in self.slots.items() if everything or key < current}
        for key in done:
            del self.slots[key]
        return done

    async def flush(self, db: Database, *, everything: bool = False) -> int:
        """Write the finished slots (all with `everything`); how many. A slot that cannot
        be written (the database is away) is put back for the next flush."""
        done = self.take_finished(everything=everything)
        if not done:
            return 0
        try:
            async with db.session(write=True) as session, session.begin():
                session.add_all(
                    RequestStats(
                        slot_start=datetime.fromtimestamp(key * SLOT_S, UTC),
                        process=self.process,
                        requests=slot.requests,
                        errors=slot.errors,
                        buckets=slot.buckets,
                        max_ms=slot.max_ms,
                    )
                    for key, slot in done.items()
                )
        except Exception:  # noqa: BLE001  the numbers wait; serving goes on
            log.warning("request_stats_not_written", slots=len(done))
            for key, slot in done.items():
                self.slots.setdefault(key, slot)
            return 0
        return len(done)


class LatencyMiddleware:
    """Times every request to its last byte: into Prometheus by route template, method
    and status class (every request but `/metrics` and static files), and into the SLO
    recorder (API requests)."""

    def __init__(self, app: ASGIApp, *, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(UNMEASURED):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes is a 5xx to the client

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            took = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"  # never the raw path
            method = scope.get("method", "GET")
            metrics.labelled(metrics.HTTP_REQUESTS, template, method, f"{status // 100}xx").inc()
            metrics.labelled(metrics.HTTP_LATENCY, template, method).observe(took)
            if path.startswith(MEASURED):
                self.recorder.record(took * 1000, status)


@contextlib.asynccontextmanager
async def flushing(db: Database, recorder: Recorder) -> AsyncIterator[None]:
    """While serving: write finished slots every few seconds; everything at the end."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await recorder.flush(db)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await recorder.flush(db, everything=True)


@dataclass(frozen=True)
class Window:
    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


async def window(session: AsyncSession, *, since: datetime, until: datetime) -> Window:
    """Every process's requests in slots that started in [since, until)."""
    rows = (
        await session.execute(
            select(
                RequestStats.requests,
                RequestStats.errors,
                RequestStats.buckets,
                RequestStats.max_ms,
            ).where(RequestStats.slot_start >= since, RequestStats.slot_start < until)
        )
    ).all()
    requests = sum(row.requests for row in rows)
    buckets = (
        [sum(column) for column in zip(*(row.buckets for row in rows), strict=True)] if rows else []
    )
    return Window(
        requests=requests,
        errors=sum(row.errors for row in rows),
        p95_ms=_p95(buckets, max((row.max_ms for row in rows), default=0.0)),
    )


def _p95(buckets: list[int], slowest: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= 0.95 * total:
            return float(min(BOUNDS_MS[index], slowest)) if index < len(BOUNDS_MS) else slowest
    return slowest


@dataclass(frozen=True)
class State:
    """The SLO now: the window's numbers against the targets."""

    requests: int
    p95_ms: float | None
    error_rate: float
    target_p95_ms: float
    target_error_rate: float
    window_s: int
    breached: bool  # this window breaches (with enough requests to judge)
    breaches_in_a_row: int
    alerting: bool  # an SLO alert is open

    @property
    def status(self) -> str:
        if self.alerting:
            return "breached"
        return "breaching" if self.breached else "ok"


def _breaches(measured: Window, settings: Settings) -> bool:
    if measured.requests < settings.slo_min_requests:
        return False
    slow = measured.p95_ms is not None and measured.p95_ms > settings.slo_p95_ms
    return slow or measured.error_rate > settings.slo_error_rate


async def state(session: AsyncSession, settings: Settings, now: datetime | None = None) -> State:
    now = now or utcnow()
    measured = await window(
        session, since=now - timedelta(seconds=settings.slo_window_s), until=now
    )
    return State(
        requests=measured.requests,
        p95_ms=measured.p95_ms,
        error_rate=round(measured.error_rate, 6),
        target_p95_ms=settings.slo_p95_ms,
        target_error_rate=settings.slo_error_rate,
        window_s=settings.slo_window_s,
        breached=_breaches(measured, settings),
        breaches_in_a_row=await _in_a_row(session),
        alerting=await alerts.is_open(session, SLO_KEY),
    )


async def _in_a_row(session: AsyncSession, limit: int = 60) -> int:
    recent = await session.scalars(
        select(SloCheck.breached)
        .order_by(SloCheck.checked_at.desc(), SloCheck.id.desc())
        .limit(limit)
    )
    count = 0
    for breached in recent:
        if not breached:
            break
        count += 1
    return count


async def check(db: Database, settings: Settings, now: datetime | None = None) -> State:
    """Judge the window, record it, and alert on a run of breaches (or its end)."""
    now = now or utcnow()
    async with db.session(write=True) as session, session.begin():
        judged = await state(session, settings, now)
        session.add(
            SloCheck(
                checked_at=now,
                requests=judged.requests,
                p95_ms=judged.p95_ms,
                error_rate=judged.error_rate,
                breached=judged.breached,
            )
        )
        await session.flush()
        in_a_row = await _in_a_row(session)
        if judged.breached and in_a_row >= settings.slo_breach_checks:
            await alerts.record(
                session, settings, "critical", "API SLO breached", _said(judged), key=SLO_KEY
            )
        elif not judged.breached:
            await alerts.resolve(session, settings, SLO_KEY, "API SLO met again", _said(judged))
        await session.execute(
            delete(RequestStats).where(RequestStats.slot_start < now - KEEP_STATS)
        )
        await session.execute(delete(SloCheck).where(SloCheck.checked_at < now - KEEP_CHECKS))
        judged = replace(
            judged, breaches_in_a_row=in_a_row, alerting=await alerts.is_open(session, SLO_KEY)
        )
    await alerts.deliver_due(db, settings)
    return judged


def _said(judged: State) -> str:
    p95 = f"{judged.p95_ms:.0f} ms" if judged.p95_ms is not None else "no requests"
    return (
        f"Over the last {judged.window_s // 60} minutes: p95 {p95} "
        f"(SLO {judged.target_p95_ms:.0f} ms), "
        f"5xx {judged.error_rate:.2%} (SLO {judged.target_error_rate:.2%}), "
        f"{judged.requests} requests."
    )


def tick_task(db: Database, settings: Settings, *, every_s: float = 60) -> TickTask:
    async def watch() -> object:
        return await check(db, settings)

    return at_most_every(every_s, watch)


async def uptime(session: AsyncSession, *, since: datetime) -> float | None:
    """The share of checks since `since` that met the SLO; None before the first check."""
    total, breached = (
        await session.execute(
            select(
                func.count(), func.coalesce(func.sum(case((SloCheck.breached, 1), else_=0)), 0)
            ).where(SloCheck.checked_at >= since)
        )
    ).one()
    return None if not total else round(1 - int(breached) / int(total), 5)


async def public_numbers(session: AsyncSession, settings: Settings) -> dict[str, Any]:
    """What a status page shows: the last week's share of checks that met the SLO, runs
    started today (UTC), the API's current p95. Nothing secret."""
    now = utcnow()
    [(_day, jobs_today)] = await queue.runs_per_day(session, days=1, now=now)
    return {
        "uptime_7d": await uptime(session, since=now - timedelta(days=7)),
        "jobs_today": jobs_today,
        "p95_ms": (await state(session, settings, now)).p95_ms,
    }
