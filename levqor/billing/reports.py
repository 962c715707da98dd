"""What the business looks like to its operator: revenue (MRR, ARR, paying users, the
conversion funnel, partner commissions) and costs (Stripe fees, LLM calls, infra) with
the number of paying users that covers them.

Money is integer cents in the billing currency; LLM costs are recorded in micro-dollars
and added as cents at 1:1, so the costs report assumes the billing currency is USD (it
says so when it is not). Stripe's fees are estimated from `LEVQOR_STRIPE_FEE_BP` and
`LEVQOR_STRIPE_FEE_FIXED_CENTS` (Stripe's standard card pricing by default): Stripe's
own balance report is the exact figure.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import CompoundSelect, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.models import User
from levqor.billing import plans
from levqor.billing.models import (
    CreditEntry,
    Dispute,
    LlmUsage,
    Payment,
    Refund,
    RevenueSnapshot,
    Subscription,
    kept_cents,
)
from levqor.billing.service import LIVE_STATUSES, RUN
from levqor.config import Settings
from levqor.db.base import upsert, utc_day, utcnow
from levqor.db.engine import Database
from levqor.periodic import TickTask, at_most_every


@dataclass(frozen=True)
class Funnel:
    signups: int
    activated: int  # ran at least one paid run
    paying: int  # paid at least once
    subscribed: int  # a plan billing now


@dataclass(frozen=True)
class Revenue:
    currency: str
    mrr_cents: int
    arr_cents: int
    subscriptions_by_plan: dict[str, int]
    paying_users: int
    revenue_this_month_cents: int
    revenue_last_30_days_cents: int
    refunded_this_month_cents: int  # refunds made this month, whenever the payment was
    disputed_this_month_cents: int  # disputes opened this month and not won
    funnel: Funnel
    partner_commission_cents: dict[str, int]


async def revenue(
    session: AsyncSession, *, settings: Settings, partner_commission_cents: dict[str, int]
) -> Revenue:
    """The revenue report; the partners' commission totals come from the caller (the
    report is assembled above both packages, in `ops`)."""
    now = utcnow()
    month_start = _month_start(now)
    by_plan = await _live_by_plan(session)
    mrr = _mrr(by_plan)
    recent = now - timedelta(days=30)
    subscribed = await _count_users(
        select(Subscription.user_id).where(Subscription.status.in_(LIVE_STATUSES)), session
    )
    paying_now = await _paying_users(session, since=recent)
    funnel = Funnel(
        signups=int(await session.scalar(select(func.count()).select_from(User)) or 0),
        activated=await _count_users(
            select(CreditEntry.user_id).where(CreditEntry.reason == RUN), session
        ),
        paying=await _count_users(select(Payment.user_id), session),
        subscribed=subscribed,
    )
    return Revenue(
        currency=settings.billing_currency,
        mrr_cents=mrr,
        arr_cents=mrr * 12,
        subscriptions_by_plan=by_plan,
        paying_users=paying_now,
        revenue_this_month_cents=await _net_paid(session, since=month_start),
        revenue_last_30_days_cents=await _net_paid(session, since=recent),
        refunded_this_month_cents=await _refunded(session, since=month_start),
        disputed_this_month_cents=await _disputed(session, since=month_start),
        funnel=funnel,
        partner_commission_cents=partner_commission_cents,
    )


async def _refunded(session: AsyncSession, *, since: datetime) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(Refund.created_at >= since)
    )
    return int(total or 0)


async def _disputed(session: AsyncSession, *, since: datetime) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(Dispute.amount_cents), 0)).where(
            Dispute.created_at >= since, Dispute.status != "won"
        )
    )
    return int(total or 0)


async def _live_by_plan(session: AsyncSession) -> dict[str, int]:
    live = await session.execute(
        select(Subscription.plan, func.count())
        .where(Subscription.status.in_(LIVE_STATUSES))
        .group_by(Subscription.plan)
    )
    return {plan: int(count) for plan, count in live}


def _mrr(by_plan: dict[str, int]) -> int:
    return sum(
        plans.PLANS[plan].price_cents * n for plan, n in by_plan.items() if plan in plans.PLANS
    )


async def record_snapshot(session: AsyncSession) -> RevenueSnapshot:
    """Today's MRR, subscriptions and paying users, written over today's earlier record:
    the last one of a UTC day is that day's closing figure."""
    now = utcnow()
    by_plan = await _live_by_plan(session)
    values = {
        "day": now.date(),
        "mrr_cents": _mrr(by_plan),
        "subscriptions": sum(by_plan.values()),
        "paying_users": await _paying_users(session, since=now - timedelta(days=30)),
        "recorded_at": now,
    }
    dialect = session.get_bind().dialect.name
    statement = upsert(dialect, RevenueSnapshot.__table__).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["day"], set_={k: v for k, v in values.items() if k != "day"}
        )
    )
    return RevenueSnapshot(**values)


async def mrr_history(session: AsyncSession, *, days: int = 90) -> list[RevenueSnapshot]:
    """The recorded days among the last `days`, oldest first (none before the first
    record: the chart says since when)."""
    since = utcnow().date() - timedelta(days=days - 1)
    rows = await session.scalars(
        select(RevenueSnapshot).where(RevenueSnapshot.day >= since).order_by(RevenueSnapshot.day)
    )
    return list(rows)


def snapshot_task(db: Database, *, every_s: float = 3600) -> TickTask:
    """For the scheduler: record today's revenue snapshot at most every `every_s`."""

    async def record() -> object:
        async with db.session(write=True) as session, session.begin():
            return await record_snapshot(session)

    return at_most_every(every_s, record)


@dataclass(frozen=True)
class CostsOf:
    stripe_cents: int
    llm_cents: int
    infra_cents: int
    total_cents: int


def _costs_of(*, stripe_cents: int, llm_cents: int, infra_cents: int) -> CostsOf:
    return CostsOf(stripe_cents, llm_cents, infra_cents, stripe_cents + llm_cents + infra_cents)


@dataclass(frozen=True)
class Costs:
    currency: str
    today: CostsOf
    this_month: CostsOf
    llm_this_month_micro_usd: int
    arpu_cents: int  # revenue a paying user brings a month
    break_even_users: int | None  # paying users that cover this month's costs
    notes: list[str]


async def costs(session: AsyncSession, *, settings: Settings) -> Costs:
    now = utcnow()
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = _month_start(now)
    days = calendar.monthrange(now.year, now.month)[1]
    llm_month = await _llm_micro_usd(session, since=month_start)
    today = _costs_of(
        stripe_cents=await _stripe_fees(session, settings, since=day_start),
        llm_cents=math.ceil(await _llm_micro_usd(session, since=day_start) / 10_000),
        infra_cents=math.ceil(settings.infra_monthly_cents / days),
    )
    month = _costs_of(
        stripe_cents=await _stripe_fees(session, settings, since=month_start),
        llm_cents=math.ceil(llm_month / 10_000),
        infra_cents=settings.infra_monthly_cents,
    )
    arpu = await _arpu(session, settings)
    notes = ["Stripe fees are estimated from LEVQOR_STRIPE_FEE_BP and _FIXED_CENTS."]
    if settings.billing_currency != "usd":
        notes.append("LLM costs are in USD, added as if the billing currency were USD.")
    return Costs(
        currency=settings.billing_currency,
        today=today,
        this_month=month,
        llm_this_month_micro_usd=llm_month,
        arpu_cents=arpu,
        break_even_users=math.ceil(month.total_cents / arpu) if arpu else None,
        notes=notes,
    )


async def _arpu(session: AsyncSession, settings: Settings) -> int:
    """The last 30 days' net revenue per paying user; with no one paying yet, the cheapest
    plan's price (what the next user is likely to bring)."""
    recent = utcnow() - timedelta(days=30)
    paying = await _paying_users(session, since=recent)
    paid = await _net_paid(session, since=recent)
    if paying and paid:
        return paid // paying
    prices = [plan.price_cents for plan in plans.PLANS.values() if plan.price_cents]
    return min(prices) if prices else 0


async def _stripe_fees(session: AsyncSession, settings: Settings, *, since: datetime) -> int:
    count, amount = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(Payment.amount_cents), 0)).where(
                Payment.created_at >= since
            )
        )
    ).one()
    return math.ceil(int(amount) * settings.stripe_fee_bp / 10_000) + int(count) * (
        settings.stripe_fee_fixed_cents
    )


async def _llm_micro_usd(session: AsyncSession, *, since: datetime) -> int:
    spent = await session.scalar(
        select(func.coalesce(func.sum(LlmUsage.cost_micro_usd), 0)).where(
            LlmUsage.created_at >= since
        )
    )
    return int(spent or 0)


async def _net_paid(session: AsyncSession, *, since: datetime) -> int:
    paid = await session.scalar(
        select(func.coalesce(func.sum(kept_cents()), 0)).where(Payment.created_at >= since)
    )
    return int(paid or 0)


async def _paying_users(session: AsyncSession, *, since: datetime) -> int:
    """Users with a plan billing now, or a payment since `since` not refunded in full."""
    return await _count_users(
        select(Subscription.user_id)
        .where(Subscription.status.in_(LIVE_STATUSES))
        .union(select(Payment.user_id).where(Payment.created_at >= since, kept_cents() > 0)),
        session,
    )


async def _count_users(query: Select[Any] | CompoundSelect[Any], session: AsyncSession) -> int:
    """How many distinct users the first column of `query` names."""
    rows = query.subquery()
    counted = await session.scalar(select(func.count(func.distinct(rows.c[0]))))
    return int(counted or 0)


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Day:
    """One UTC day of money: revenue (net of refunds) and costs by source."""

    day: date
    revenue_cents: int
    stripe_cents: int
    llm_cents: int
    infra_cents: int

    @property
    def costs_cents(self) -> int:
        return self.stripe_cents + self.llm_cents + self.infra_cents


async def daily(session: AsyncSession, *, settings: Settings, days: int = 30) -> list[Day]:
    """The last `days` UTC days, oldest first, every day present (zero when quiet)."""
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    dialect = session.get_bind().dialect.name
    paid_day = utc_day(Payment.created_at, dialect)
    payments = {
        str(day): (int(count), int(amount), int(net))
        for day, count, amount, net in await session.execute(
            select(
                paid_day,
                func.count(),
                func.sum(Payment.amount_cents),
                func.sum(kept_cents()),
            )
            .where(Payment.created_at >= since)
            .group_by(paid_day)
        )
    }
    used_day = utc_day(LlmUsage.created_at, dialect)
    llm = {
        str(day): int(micro)
        for day, micro in await session.execute(
            select(used_day, func.sum(LlmUsage.cost_micro_usd))
            .where(LlmUsage.created_at >= since)
            .group_by(used_day)
        )
    }
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        count, amount, net = payments.get(day.isoformat(), (0, 0, 0))
        month_days = calendar.monthrange(day.year, day.month)[1]
        series.append(
            Day(
                day=day,
                revenue_cents=net,
                stripe_cents=math.ceil(amount * settings.stripe_fee_bp / 10_000)
                + count * settings.stripe_fee_fixed_cents,
                llm_cents=math.ceil(llm.get(day.isoformat(), 0) / 10_000),
                infra_cents=math.ceil(settings.infra_monthly_cents / month_days),
            )
        )
    return series


async def paying_users(session: AsyncSession, *, since: datetime) -> int:
    """Users with a plan billing now, or a payment since `since` not refunded in full."""
    return await _paying_users(session, since=since)
