"""Queue operations on the jobs table. Every statement of the queue lives here.

Claiming marks up to `limit` due jobs `running` under this worker's lease, in one
statement (`UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING` on
PostgreSQL; the same without the lock clause on SQLite, whose writers are serial). A
running job whose lease expired (its worker died) is due again and is claimed the same
way, so no separate sweeper is needed.

Every write after the claim is guarded by `lease_owner = me AND status = 'running'`: a
worker that lost its job (lease taken over, or the job cancelled) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.jobs import callbacks
from levqor.jobs.models import (
    QUEUED,
    RETRYING,
    RUNNING,
    WAITING_STATES,
    Job,
    JobStep,
)

CANDIDATES_PER_SLOT = 4


@dataclass(frozen=True)
class Claimed:
    id: str
    user_id: str
    workflow_id: str
    workflow_version: int
    input: Any
    attempts: int


async def claim(
    session: AsyncSession,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    now: datetime,
    max_running_per_user: int,
) -> list[Claimed]:
    """Take up to `limit` due jobs, at most `max_running_per_user` running per user.

    Users already at their limit are left out in SQL; the batch itself is capped per user
    here. Candidates are over-read so one user's backlog cannot fill a whole batch. (Two
    claimers racing on PostgreSQL each see only committed claims, so a user can briefly
    exceed the limit by one batch per concurrent claimer.)
    """
    running = (
        select(Job.user_id, func.count().label("running"))
        .where(Job.status == RUNNING, Job.lease_expires_at >= now)
        .group_by(Job.user_id)
        .subquery()
    )
    candidates = (
        await session.execute(
            select(Job.id, Job.user_id, func.coalesce(running.c.running, 0))
            .outerjoin(running, running.c.user_id == Job.user_id)
            .where(
                or_(
                    and_(Job.status.in_(WAITING_STATES), Job.run_at <= now),
                    and_(Job.status == RUNNING, Job.lease_expires_at < now),
                ),
                func.coalesce(running.c.running, 0) < max_running_per_user,
            )
            .order_by(Job.priority.desc(), Job.run_at, Job.id)
            .limit(limit * CANDIDATES_PER_SLOT)
            .with_for_update(of=Job, skip_locked=True)
        )
    ).all()
    chosen = _fair_share(candidates, limit, max_running_per_user)
    if not chosen:
        return []
    rows = await session.execute(
        update(Job)
        .where(Job.id.in_(chosen))
        .values(
            status=RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
        )
        .returning(
            Job.id, Job.user_id, Job.workflow_id, Job.workflow_version, Job.input, Job.attempts
        )
        .execution_options(synchronize_session=False)
    )
    return [Claimed(*row) for row in rows]


CHANNEL = "levqor_jobs"


async def notify(session: AsyncSession) -> None:
    """Wake listening workers on PostgreSQL; delivered when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text(f"NOTIFY {CHANNEL}"))


def _fair_share(candidates: Any, limit: int, per_user: int) -> list[str]:
    taken: dict[str, int] = {}
    chosen: list[str] = []
    for job_id, user_id, running in candidates:
        count = taken.get(user_id, running)
        if count < per_user:
            taken[user_id] = count + 1
            chosen.append(job_id)
            if len(chosen) == limit:
                break
    return chosen


def _owned(job_id: str, worker_id: str) -> Any:
    return and_(Job.id == job_id, Job.lease_owner == worker_id, Job.status == RUNNING)


async def _guarded(session: AsyncSession, job_id: str, worker_id: str, **values: Any) -> bool:
    result = await session.execute(
        update(Job)
        .where(_owned(job_id, worker_id))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def heartbeat(
    session: AsyncSession, *, worker_id: str, lease: timedelta, now: datetime
) -> int:
    """Extend the lease of every job this worker holds; the number still held."""
    result = await session.execute(
        update(Job)
        .where(Job.lease_owner == worker_id, Job.status == RUNNING)
        .values(lease_expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def still_owned(session: AsyncSession, *, job_id: str, worker_id: str) -> bool:
    found = await session.scalar(select(Job.id).where(_owned(job_id, worker_id)))
    return found is not None


async def _finish(session: AsyncSession, job_id: str, worker_id: str, **values: Any) -> bool:
    """A final status; the run's callback is queued in the same transaction."""
    row = (
        await session.execute(
            update(Job)
            .where(_owned(job_id, worker_id))
            .values(**values, lease_owner=None, lease_expires_at=None)
            .returning(
                Job.user_id, Job.workflow_id, Job.status, Job.result, Job.error, Job.callback_url
            )
            .execution_options(synchronize_session=False)
        )
    ).first()
    if row is None:
        return False
    user_id, workflow_id, status, result, error, url = row
    if url:
        await callbacks.enqueue(
            session,
            job_id=job_id,
            user_id=user_id,
            workflow_id=workflow_id,
            status=status,
            result=result,
            error=error,
            url=url,
        )
    return True


async def succeed(
    session: AsyncSession, *, job_id: str, worker_id: str, result: Any, now: datetime
) -> bool:
    return await _finish(
        session,
        job_id,
        worker_id,
        status="succeeded",
        result=result,
        error=None,
        finished_at=now,
    )


async def fail(
    session: AsyncSession, *, job_id: str, worker_id: str, error: str, now: datetime
) -> bool:
    """Final failure: the job goes to the dead-letter queue."""
    return await _finish(session, job_id, worker_id, status="failed", error=error, finished_at=now)


async def retry_at(
    session: AsyncSession, *, job_id: str, worker_id: str, run_at: datetime, error: str
) -> bool:
    return await _guarded(
        session,
        job_id,
        worker_id,
        status=RETRYING,
        run_at=run_at,
        error=error,
        lease_owner=None,
        lease_expires_at=None,
    )


async def continue_at(
    session: AsyncSession, *, job_id: str, worker_id: str, run_at: datetime
) -> bool:
    """A delay step: the job waits, holding no worker, and resumes after it."""
    return await _guarded(
        session,
        job_id,
        worker_id,
        status=QUEUED,
        run_at=run_at,
        lease_owner=None,
        lease_expires_at=None,
    )


async def release(session: AsyncSession, *, worker_id: str, now: datetime) -> int:
    """Hand back every job this worker holds (graceful shutdown), due at once."""
    result = await session.execute(
        update(Job)
        .where(Job.lease_owner == worker_id, Job.status == RUNNING)
        .values(status=QUEUED, run_at=now, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def load_steps(session: AsyncSession, *, job_id: str) -> dict[str, JobStep]:
    rows = await session.scalars(select(JobStep).where(JobStep.job_id == job_id))
    return {step.step_id: step for step in rows}


async def save_step(session: AsyncSession, *, job_id: str, worker_id: str, **values: Any) -> bool:
    """Checkpoint a step, only while this worker still holds the job."""
    if not await still_owned(session, job_id=job_id, worker_id=worker_id):
        return False
    row = {"job_id": job_id, **values}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(JobStep).values(**row)
    changed = {key: statement.excluded[key] for key in values if key != "step_id"}
    await session.execute(
        statement.on_conflict_do_update(index_elements=["job_id", "step_id"], set_=changed)
    )
    return True


async def reset_failed_steps(session: AsyncSession, *, job_id: str) -> None:
    """Before a replay: failed steps get a fresh set of attempts."""
    await session.execute(
        delete(JobStep).where(JobStep.job_id == job_id, JobStep.status == "failed")
    )
