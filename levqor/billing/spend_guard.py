"""The spend guard: LLM calls stop for the day once they cost too much.

Every LLM call's cost is recorded (`llm_usage`, micro-dollars). After each, the guard
adds up the day (UTC) for that user, and for the whole server; past
`LEVQOR_SPEND_GUARD_USER_DAILY_MICRO_USD` (or `LEVQOR_SPEND_GUARD_DAILY_MICRO_USD`) it
pauses LLM calls (`llm` steps, the AI planner) for that user (or everyone) until the next
UTC midnight, and says so in the audit log. An operator can resume sooner
(`levqor spend-guard resume`). A runaway loop of `llm` steps costs one day's limit, not
a month's bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import metrics
from levqor.audit import service as audit
from levqor.billing.models import LlmUsage, SpendPause
from levqor.config import Settings
from levqor.connectors.errors import ConnectorError
from levqor.db.base import utcnow
from levqor.db.engine import Database


class SpendPaused(ConnectorError):
    """LLM calls are paused by the spend guard; retrying today will not help."""


def _whose(user_id: str | None) -> ColumnElement[bool]:
    """A user's own pauses, or with None the server-wide ones."""
    return SpendPause.user_id == user_id if user_id else SpendPause.user_id.is_(None)


def _in_force() -> tuple[ColumnElement[bool], ...]:
    return SpendPause.until > utcnow(), SpendPause.resumed_at.is_(None)


def _today() -> tuple[datetime, datetime]:
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


async def active_pause(session: AsyncSession, *, user_id: str) -> SpendPause | None:
    """The pause that stops this user's LLM calls now (theirs or everyone's), if any."""
    pause: SpendPause | None = await session.scalar(
        select(SpendPause).where(or_(_whose(user_id), _whose(None)), *_in_force()).limit(1)
    )
    return pause


async def ensure_allowed(session: AsyncSession, *, user_id: str) -> None:
    pause = await active_pause(session, user_id=user_id)
    if pause is not None:
        whose = "for this account" if pause.user_id else "on this server"
        raise SpendPaused(
            f"spend guard: LLM calls are paused {whose} until {pause.until.isoformat()} "
            f"(${pause.spent_micro_usd / 1e6:.2f} spent today, limit "
            f"${pause.limit_micro_usd / 1e6:.2f})"
        )


async def record_usage(
    session: AsyncSession,
    *,
    settings: Settings,
    user_id: str,
    purpose: str,
    usage: dict[str, Any],
) -> None:
    """Record an LLM call's cost, then pause whoever it took past a daily limit."""
    await _record(session, user_id=user_id, purpose=purpose, usage=usage)
    metrics.LLM_TOKENS.labels("prompt").inc(int(usage.get("prompt_tokens") or 0))
    metrics.LLM_TOKENS.labels("completion").inc(int(usage.get("completion_tokens") or 0))
    metrics.LLM_COST.inc(int(usage.get("cost_micro_usd") or 0))
    start, end = _today()
    for subject, limit in (
        (user_id, settings.spend_guard_user_daily_micro_usd),
        (None, settings.spend_guard_daily_micro_usd),
    ):
        if limit <= 0:
            continue
        spent = await _spent(session, user_id=subject, since=start)
        # Each pause already lifted today allows one more day's limit on top.
        earlier = await _pauses_today(session, user_id=subject, until=end)
        if spent >= limit * (earlier + 1) and not await paused(session, user_id=subject):
            session.add(
                SpendPause(user_id=subject, spent_micro_usd=spent, limit_micro_usd=limit, until=end)
            )
            await audit.record(
                session,
                actor="system",
                action="spend_guard_paused",
                object_id=subject,
                detail={
                    "scope": "user" if subject else "server",
                    "spent_micro_usd": spent,
                    "limit_micro_usd": limit,
                    "until": end.isoformat(),
                },
            )


async def _spent(session: AsyncSession, *, user_id: str | None, since: datetime) -> int:
    query = select(func.coalesce(func.sum(LlmUsage.cost_micro_usd), 0)).where(
        LlmUsage.created_at >= since
    )
    if user_id is not None:
        query = query.where(LlmUsage.user_id == user_id)
    return int(await session.scalar(query) or 0)


async def _pauses_today(session: AsyncSession, *, user_id: str | None, until: datetime) -> int:
    count = await session.scalar(
        select(func.count()).where(_whose(user_id), SpendPause.until == until)
    )
    return int(count or 0)


async def paused(session: AsyncSession, *, user_id: str | None) -> bool:
    found = await session.scalar(
        select(SpendPause.id).where(_whose(user_id), *_in_force()).limit(1)
    )
    return found is not None


async def resume(session: AsyncSession, *, user_id: str | None, actor: str) -> int:
    """Lift the active pause of a user (or, with None, the server's); how many lifted.
    Resumed, they may spend one more day's limit before the guard pauses them again."""
    lifted = await session.execute(
        update(SpendPause)
        .where(_whose(user_id), *_in_force())
        .values(resumed_at=utcnow(), resumed_by=actor)
        .returning(SpendPause.id)
    )
    count = len(lifted.all())
    if count:
        await audit.record(
            session,
            actor=actor,
            action="spend_guard_resumed",
            object_id=user_id,
            detail={"scope": "user" if user_id else "server"},
        )
    return count


async def pauses_since(session: AsyncSession, *, since: datetime) -> list[SpendPause]:
    """Pauses the guard put in place since `since` (the server's has no user), oldest first."""
    rows = await session.scalars(
        select(SpendPause).where(SpendPause.paused_at >= since).order_by(SpendPause.paused_at)
    )
    return list(rows)


@dataclass(frozen=True)
class Spender:
    user_id: str
    spent_micro_usd: int
    paused: bool


async def today(session: AsyncSession, *, limit: int = 20) -> tuple[int, list[Spender]]:
    """Today's LLM spend: the server's total and the biggest spenders."""
    start, _end = _today()
    total = await _spent(session, user_id=None, since=start)
    rows = await session.execute(
        select(LlmUsage.user_id, func.sum(LlmUsage.cost_micro_usd).label("spent"))
        .where(LlmUsage.created_at >= start)
        .group_by(LlmUsage.user_id)
        .order_by(func.sum(LlmUsage.cost_micro_usd).desc())
        .limit(limit)
    )
    spenders = [
        Spender(user_id, int(spent), await paused(session, user_id=user_id))
        for user_id, spent in rows.all()
    ]
    return total, spenders


async def _record(
    session: AsyncSession, *, user_id: str, purpose: str, usage: dict[str, Any]
) -> None:
    session.add(
        LlmUsage(
            user_id=user_id,
            purpose=purpose,
            model=str(usage["model"]),
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            cost_micro_usd=int(usage["cost_micro_usd"]),
        )
    )
    await session.flush()


class LlmStepGuard:
    """The spend guard around each `llm` step of a run (the engine's hooks for `llm`):
    refuse the step while its owner or the server is paused, record what it spent."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def before(self, *, user_id: str) -> None:
        async with self.db.session(write=False) as session:
            await ensure_allowed(session, user_id=user_id)

    async def after(self, *, user_id: str, output: Any) -> None:
        usage = {
            **output["usage"],
            "model": output["model"],
            "cost_micro_usd": output["cost_micro_usd"],
        }
        async with self.db.session(write=True) as session, session.begin():
            await record_usage(
                session, settings=self.settings, user_id=user_id, purpose="step", usage=usage
            )
