"""The operator's report: uptime, p95, runs and failures, money in and out by source,
signups and paying users over a day, a week or a month.

`levqor report daily|weekly|monthly` prints it (`--send` also sends it through the alert
channels); the scheduler sends the daily one once per UTC day. Periods end now: the
last 24 hours, 7 days, 30 days (money by UTC day, today included).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.models import User
from levqor.billing import reports as money
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.jobs.models import FAILED, Job
from levqor.ops import alerts, slo
from levqor.ops.models import SloCheck
from levqor.periodic import TickTask, at_most_every

Period = Literal["daily", "weekly", "monthly"]
DAYS: dict[str, int] = {"daily": 1, "weekly": 7, "monthly": 30}


@dataclass(frozen=True)
class Report:
    period: str
    since: datetime
    until: datetime
    uptime: float | None  # the share of SLO checks that met the SLO
    p95_ms: float | None  # the median of the checks' p95
    runs: int
    failed: int
    signups: int
    paying_users: int
    revenue_cents: int
    stripe_cents: int
    llm_cents: int
    infra_cents: int
    currency: str

    @property
    def costs_cents(self) -> int:
        return self.stripe_cents + self.llm_cents + self.infra_cents

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["since"], body["until"] = self.since.isoformat(), self.until.isoformat()
        body["costs_cents"] = self.costs_cents
        return body


async def build(
    session: AsyncSession, settings: Settings, period: Period, now: datetime | None = None
) -> Report:
    until = now or utcnow()
    days = DAYS[period]
    since = until - timedelta(days=days)
    p95s = [
        value
        for value in await session.scalars(
            select(SloCheck.p95_ms).where(
                SloCheck.checked_at >= since, SloCheck.p95_ms.is_not(None)
            )
        )
        if value is not None
    ]
    by_day = await money.daily(session, settings=settings, days=days)
    return Report(
        period=period,
        since=since,
        until=until,
        uptime=await slo.uptime(session, since=since),
        p95_ms=round(statistics.median(p95s), 1) if p95s else None,
        runs=await _count(session, Job.created_at >= since),
        failed=await _count(session, Job.status == FAILED, Job.finished_at >= since),
        signups=int(
            await session.scalar(select(func.count()).where(User.created_at >= since)) or 0
        ),
        paying_users=await money.paying_users(session, since=since),
        revenue_cents=sum(day.revenue_cents for day in by_day),
        stripe_cents=sum(day.stripe_cents for day in by_day),
        llm_cents=sum(day.llm_cents for day in by_day),
        infra_cents=sum(day.infra_cents for day in by_day),
        currency=settings.billing_currency,
    )


async def _count(session: AsyncSession, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(Job).where(*where)) or 0)


def as_text(report: Report) -> str:
    unit = report.currency.upper()
    uptime = f"{report.uptime:.3%}" if report.uptime is not None else "not measured yet"
    p95 = f"{report.p95_ms:.0f} ms" if report.p95_ms is not None else "no requests"
    share = f" ({report.failed / report.runs:.1%})" if report.runs else ""
    return "\n".join(
        [
            f"Levqor {report.period} report, {report.since:%Y-%m-%d %H:%M} to "
            f"{report.until:%Y-%m-%d %H:%M} UTC",
            f"Uptime (SLO met): {uptime}; API p95: {p95}",
            f"Runs: {report.runs}, failed: {report.failed}{share}",
            f"Signups: {report.signups}; paying users: {report.paying_users}",
            f"Revenue: {report.revenue_cents / 100:.2f} {unit}; costs: "
            f"{report.costs_cents / 100:.2f} {unit} (Stripe {report.stripe_cents / 100:.2f}, "
            f"LLM {report.llm_cents / 100:.2f}, infra {report.infra_cents / 100:.2f})",
        ]
    )


async def send(db: Database, settings: Settings, report: Report, *, key: str | None = None) -> bool:
    """Through the alert channels, as an info alert; False if `key` was sent before."""
    async with db.session(write=True) as session, session.begin():
        recorded = await alerts.record(
            session,
            settings,
            "info",
            f"Levqor {report.period} report",
            as_text(report),
            key=key,
            once=key is not None,
        )
    if recorded.new:
        await alerts.deliver_due(db, settings, alert_id=recorded.alert.id)
    return recorded.new


def daily_task(db: Database, settings: Settings, *, every_s: float = 600) -> TickTask:
    """For the scheduler: the daily report, once per UTC day."""

    async def send_daily() -> object:
        now = utcnow()
        async with db.session(write=False) as session:
            report = await build(session, settings, "daily", now)
        return await send(db, settings, report, key=f"report:daily:{now:%Y-%m-%d}")

    return at_most_every(every_s, send_daily)
