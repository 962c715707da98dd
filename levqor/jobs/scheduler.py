"""`levqor scheduler`: fire cron schedules exactly once per fire time, and run upkeep.

Several schedulers may run. Each tick, every one of them computes each scheduled
workflow's latest due fire time and tries to insert it into `schedule_fires` together
with the run, in one transaction; the unique (workflow, fire time) key lets exactly one
succeed. Only the latest due fire time is considered, so after downtime a schedule runs
once, not once per missed time; fire times before the current version existed are not
due. A fire whose owner lacks credits is recorded as skipped, not retried every tick.

On PostgreSQL one scheduler leads: it holds a session advisory lock on a connection of
its own and is the only one that ticks; the others try for the lock each interval, so
when the leader dies (its connection closes, the lock goes with it) another takes over
within an interval. The unique key above keeps fires exactly-once even in the moment
two think they lead. On SQLite every scheduler ticks (one host, serial writers).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts import sessions as account_sessions
from levqor.accounts.models import User
from levqor.db.base import rowcount, upsert, utcnow
from levqor.idempotency import service as idempotency_service
from levqor.jobs import queue, service
from levqor.jobs.listener import plain_dsn
from levqor.jobs.models import ScheduleFire
from levqor.logging import get_logger
from levqor.runtime import Runtime
from levqor.workflows import service as workflows_service
from levqor.workflows.service import ScheduledWorkflow

log = get_logger("levqor.scheduler")


def latest_fire(cron: str, timezone: str, now: datetime) -> datetime:
    """The last fire time at or before `now`, in UTC."""
    local_now = now.astimezone(ZoneInfo(timezone))
    fire: datetime = croniter(cron, local_now + timedelta(seconds=1)).get_prev(datetime)
    return fire.astimezone(now.tzinfo)


LEADER_LOCK = "levqor_scheduler"
HELD_CHECK = timedelta(seconds=30)
FORGET_WORKERS_AFTER = timedelta(days=1)  # a worker row silent this long is long dead


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.last_upkeep: datetime | None = None
        self.last_held_check: datetime | None = None
        self._leadership: Any = None  # an asyncpg connection holding the lock

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.runtime.settings.scheduler_interval_s
        log.info("scheduler_started", interval_s=interval)
        try:
            while not stop.is_set():
                try:
                    if await self.leads():
                        await self.tick(utcnow())
                except Exception:  # a bad tick must not stop the schedules
                    log.exception("scheduler_tick_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            await self._resign()

    async def leads(self) -> bool:
        """Whether this scheduler leads now; tries to take the lead when nobody does."""
        if self.runtime.db.is_sqlite:
            return True
        if self._leadership is not None and not self._leadership.is_closed():
            return True
        self._leadership = None
        import asyncpg  # PostgreSQL only

        connection = await asyncpg.connect(plain_dsn(self.runtime.settings.sqlalchemy_url))
        if await connection.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", LEADER_LOCK):
            self._leadership = connection
            log.info("scheduler_leads")
            return True
        await connection.close()
        return False

    async def _resign(self) -> None:
        if self._leadership is not None:
            with contextlib.suppress(Exception):
                await self._leadership.close(timeout=2)  # the lock goes with it
            self._leadership = None

    async def tick(self, now: datetime) -> list[str]:
        """Fire what is due at `now`; the ids of the jobs this scheduler started.

        Each part stands alone: one workflow whose fire fails is counted against that
        workflow (and paused after several in a row), never stops the others, the export
        builds or the upkeep."""
        started = []
        for scheduled in await self._scheduled():
            try:
                job_id = await self._fire(scheduled, now)
            except Exception as exc:  # noqa: BLE001  one workflow's failure is counted as its own
                await self._fire_failed(scheduled, exc)
                continue
            if job_id:
                started.append(job_id)
        if await self._release_held(now) or started:
            self.runtime.job_wakeup.set()
        for task in self.runtime.job_hooks.on_tick:
            try:
                await task()
            except Exception:
                log.exception("tick_task_failed", task=getattr(task, "__qualname__", str(task)))
        upkeep_every = timedelta(seconds=self.runtime.settings.upkeep_interval_s)
        if self.last_upkeep is None or now - self.last_upkeep >= upkeep_every:
            self.last_upkeep = now  # a failing upkeep waits its interval, like a good one
            try:
                await self.upkeep(now)
            except Exception:
                log.exception("upkeep_failed")
        return started

    async def _release_held(self, now: datetime) -> int:
        """Held runs whose hold ran out (a spend-guard pause ended at UTC midnight) go
        back to the queue; checked at most every `HELD_CHECK`, not on every tick (a
        write transaction each second would contend with the workers on SQLite)."""
        if self.last_held_check is not None and now - self.last_held_check < HELD_CHECK:
            return 0
        self.last_held_check = now
        try:
            async with self.runtime.db.transaction() as connection:
                return await queue.release_held(connection, now=now, user_id=None, due_only=True)
        except Exception:
            log.exception("release_held_failed")
            return 0

    async def _fire_failed(self, scheduled: ScheduledWorkflow, exc: Exception) -> None:
        workflow_id = scheduled.workflow_id
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("schedule_fire_failed", workflow_id=workflow_id, error=reason)
        try:
            async with self.runtime.db.session(write=True) as session, session.begin():
                paused = await workflows_service.schedule_failed(
                    session,
                    workflow_id=workflow_id,
                    reason=reason,
                    pause_after=self.runtime.settings.schedule_pause_after_failures,
                )
        except Exception:  # the database is away: the next tick tries again
            log.exception("schedule_failure_not_recorded", workflow_id=workflow_id)
            return
        if paused:
            log.warning("schedule_paused", workflow_id=workflow_id, user_id=scheduled.user_id)

    async def _scheduled(self) -> list[ScheduledWorkflow]:
        async with self.runtime.db.session(write=False) as session:
            return await workflows_service.list_scheduled(session)

    async def _fire(self, scheduled: ScheduledWorkflow, now: datetime) -> str | None:
        workflow_id = scheduled.workflow_id
        fire_at = latest_fire(scheduled.cron, scheduled.timezone, now)
        if fire_at < scheduled.since:
            return None
        async with self.runtime.db.session(write=True) as session, session.begin():
            if not await _claim_fire(session, workflow_id, fire_at):
                return None  # fired already, by us or another scheduler
            if scheduled.failures:
                await workflows_service.schedule_fired(session, workflow_id=workflow_id)
            return await self._start(session, workflow_id, scheduled.user_id, fire_at)

    async def _start(
        self, session: AsyncSession, workflow_id: str, user_id: str, fire_at: datetime
    ) -> str | None:
        owner = await session.get(User, user_id)
        fire = await session.scalar(
            select(ScheduleFire).where(
                ScheduleFire.workflow_id == workflow_id, ScheduleFire.fire_at == fire_at
            )
        )
        assert fire is not None
        if owner is None:
            fire.outcome = "skipped_no_owner"
            return None
        try:
            async with session.begin_nested():
                job = await service.start_run(
                    session,
                    user=owner,
                    workflow_id=workflow_id,
                    input={"scheduled_for": fire_at.isoformat()},
                    cost=self.runtime.settings.run_cost_credits,
                )
        except errors.PaymentRequired:
            fire.outcome = "skipped_no_credits"
            log.warning("schedule_skipped_no_credits", workflow_id=workflow_id)
            return None
        fire.job_id, fire.outcome = job.id, "started"
        log.info(
            "schedule_fired", workflow_id=workflow_id, fire_at=fire_at.isoformat(), job_id=job.id
        )
        return job.id

    async def upkeep(self, now: datetime) -> dict[str, int]:
        """Delete what can no longer matter. Idempotent, so several schedulers may run it."""
        cutoff = now - timedelta(days=self.runtime.settings.job_retention_days)
        async with self.runtime.db.session(write=True) as session, session.begin():
            tokens = await account_sessions.prune_expired(session, kit=self.runtime.auth)
            keys = await idempotency_service.prune(session)
            old_jobs = await queue.purge_finished(session, before=cutoff)
            old_fires = await session.execute(
                delete(ScheduleFire).where(ScheduleFire.fire_at < cutoff)
            )
            pruned_above = [await task(session, now) for task in self.runtime.job_hooks.on_upkeep]
            dead_workers = await queue.forget_silent_workers(
                session, before=now - FORGET_WORKERS_AFTER
            )
        counts = {
            "refresh_tokens": tokens.refresh_tokens,
            "idempotency_keys": keys,
            "jobs": old_jobs,
            "schedule_fires": rowcount(old_fires),
            "workers": dead_workers,
        }
        for pruned in pruned_above:
            counts.update(pruned)
        # Key names holding "token" are redacted by the logger, so name the counts plainly.
        log.info(
            "upkeep",
            expired_logins=counts["refresh_tokens"],
            idempotency_records=counts["idempotency_keys"],
            old_jobs=counts["jobs"],
            old_schedule_fires=counts["schedule_fires"],
            forgotten_workers=counts["workers"],
            **{
                f"pruned_{name}": count for pruned in pruned_above for name, count in pruned.items()
            },
        )
        return counts


async def _claim_fire(session: AsyncSession, workflow_id: str, fire_at: datetime) -> bool:
    result = await session.execute(
        upsert(session.get_bind().dialect.name, ScheduleFire)
        .values(workflow_id=workflow_id, fire_at=fire_at, outcome="claimed", created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["workflow_id", "fire_at"])
    )
    return bool(rowcount(result))
