"""The spend guard: LLM calls stop for the day once they cost too much.

Every LLM call's cost is recorded (`llm_usage`, micro-dollars). After each, the guard
adds up the day (UTC) for that user, and for the whole server; past
`LEVQOR_SPEND_GUARD_USER_DAILY_MICRO_USD` (or `LEVQOR_SPEND_GUARD_DAILY_MICRO_USD`) it
pauses LLM calls (`llm` steps, the AI planner) for that user (or everyone) until the next
UTC midnight, and says so in the audit log (and the watchdog alerts). A run that meets
a pause at an `llm` step is held, not failed: it waits in the `held` status with the
reason, and goes on when an operator lifts the pause (`levqor spend-guard resume`, the
admin page) or at the pause's end. The scheduler also checks every few minutes. A
runaway loop of `llm` steps costs one day's limit, not a month's bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import events, metrics
from levqor.audit import service as audit
from levqor.billing.events import SpendResumed
from levqor.billing.models import LlmUsage, SpendPause
from levqor.config import Settings
from levqor.connectors.errors import Hold
from levqor.db.base import serialise, utcnow
from levqor.db.engine import Database
from levqor.periodic import TickTask, at_most_every


class SpendPaused(Hold):
    """LLM calls are paused by the spend guard: a run's `llm` step waits (held) until the
    pause ends or an operator lifts it; the AI planner answers 429 (`planner_paused`)."""


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
            f"${pause.limit_micro_usd / 1e6:.2f})",
            until=pause.until,
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
    metrics.labelled(metrics.LLM_TOKENS, "prompt").inc(int(usage.get("prompt_tokens") or 0))
    metrics.labelled(metrics.LLM_TOKENS, "completion").inc(int(usage.get("completion_tokens") or 0))
    metrics.LLM_COST.inc(int(usage.get("cost_micro_usd") or 0))
    await enforce(session, settings=settings, user_ids=[user_id])


async def enforce(
    session: AsyncSession, *, settings: Settings, user_ids: list[str]
) -> list[SpendPause]:
    """Pause each of `user_ids`, and the server, that today's spend took past its
    limit; the pauses added. Serialised, so two calls finishing at once cannot both
    add a pause (each pause allows one more day's limit once lifted)."""
    await serialise(session, "levqor_spend_guard")
    start, end = _today()
    subjects: list[tuple[str | None, int]] = [
        (user_id, settings.spend_guard_user_daily_micro_usd) for user_id in user_ids
    ]
    subjects.append((None, settings.spend_guard_daily_micro_usd))
    added = []
    for subject, limit in subjects:
        if limit <= 0:
            continue
        spent = await _spent(session, user_id=subject, since=start)
        # Each pause already lifted today allows one more day's limit on top.
        earlier = await _pauses_today(session, user_id=subject, until=end)
        if spent >= limit * (earlier + 1) and not await paused(session, user_id=subject):
            pause = SpendPause(
                user_id=subject, spent_micro_usd=spent, limit_micro_usd=limit, until=end
            )
            session.add(pause)
            added.append(pause)
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
    return added


async def check(session: AsyncSession, *, settings: Settings) -> list[SpendPause]:
    """The guard on a schedule: today's spend of every user past the user limit, and the
    server's, enforced even when no call just finished (usage recorded by a process
    with older settings, a limit lowered today)."""
    start, _end = _today()
    over = await session.scalars(
        select(LlmUsage.user_id)
        .where(LlmUsage.created_at >= start)
        .group_by(LlmUsage.user_id)
        .having(func.sum(LlmUsage.cost_micro_usd) >= settings.spend_guard_user_daily_micro_usd)
    )
    users = list(over) if settings.spend_guard_user_daily_micro_usd > 0 else []
    return await enforce(session, settings=settings, user_ids=users)


def tick_task(db: Database, settings: Settings, *, every_s: float = 300) -> TickTask:
    """For the scheduler: `check` at most every `every_s`."""

    async def guard() -> object:
        async with db.session(write=True) as session, session.begin():
            return await check(session, settings=settings)

    return at_most_every(every_s, guard)


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
        await events.publish(session, SpendResumed(user_id))
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
