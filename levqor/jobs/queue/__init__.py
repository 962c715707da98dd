"""Queue operations on the jobs table, shaped like procrastinate's: the operations here,
every statement in `statements.py`, the PostgreSQL/SQLite differences in `backends.py`,
the values passed around in `states.py`.

Claiming marks up to `limit` due jobs `running` under this worker's lease, in one
statement (`WITH RECURSIVE … LATERAL (SELECT … FOR UPDATE SKIP LOCKED) … UPDATE …
RETURNING` on PostgreSQL; the same plan without the lock clause on SQLite, whose writers
are serial). A
running job whose lease expired (its worker died) is put back in the queue by
`recover_lost`, which every worker runs at start and with each heartbeat: a job whose
worker stopped beating for two heartbeats (or, failing that, whose lease ran out) is
resumed by another worker within seconds.

Every write after the claim is guarded by `lease_owner = me AND status = 'running'`: a
worker that lost its job (lease taken over, or the job cancelled) changes nothing.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor import metrics
from levqor.db.base import rowcount, utcnow
from levqor.db.engine import Database
from levqor.jobs import callbacks
from levqor.jobs.models import FAILED, QUEUED, Job, JobStep
from levqor.jobs.queue import statements
from levqor.jobs.queue.backends import (
    ANALYZE_EVERY_S,
    VACUUM_AFTER_DEAD_ROWS,
    Backend,
    Connection,
    backend_for,
)
from levqor.jobs.queue.statements import CHANNEL
from levqor.jobs.queue.states import (
    Claimed,
    ClaimRequest,
    JobState,
    JobWrite,
    Outcome,
    StepCheckpoint,
    failed,
    held,
    paused,
    retrying,
    succeeded,
)

__all__ = [
    "CHANNEL",
    "Backend",
    "ClaimRequest",
    "Claimed",
    "Connection",
    "JobState",
    "JobWrite",
    "Outcome",
    "StepCheckpoint",
    "backend_for",
    "failed",
    "held",
    "paused",
    "retrying",
    "succeeded",
]


async def claim(
    session: Connection,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    now: datetime,
    max_running_per_user: int,
    concurrency: int | None = None,
    alive_since: datetime | None = None,
) -> list[Claimed]:
    """Take up to `limit` due jobs, at most `max_running_per_user` running per user, and
    when the claimer gives its `concurrency`, at most the fleet's slots less one (the
    claimer's and those of the workers that beat since `alive_since`).

    One statement (see `statements.POSTGRES_CLAIM`): the users with waiting jobs are
    found by a skip scan, and each user under the limit gives at most its room's worth
    of its next jobs, so neither a user's backlog nor a user at the limit costs more
    than an index probe. (Two claimers racing on PostgreSQL each see only committed
    claims, so a user can briefly exceed the limit by one batch per concurrent claimer.)
    """
    return await take(
        session,
        ClaimRequest(
            worker_id=worker_id,
            limit=limit,
            lease=lease,
            now=now,
            max_running_per_user=max_running_per_user,
            concurrency=max_running_per_user + 1 if concurrency is None else concurrency,
            alive_since=now if alive_since is None else alive_since,
        ),
    )


async def take(session: Connection, request: ClaimRequest) -> list[Claimed]:
    """`claim`, asked for as one value (what a worker reserves before claiming)."""
    return _started(await backend_for(session).claim(session, request))


async def take_alone(db: Database, request: ClaimRequest) -> list[Claimed]:
    """`take`, committed on its own: one statement in autocommit on PostgreSQL, one
    transaction in one hop to the driver's thread on SQLite."""
    return _started(await backend_for(db).claim_alone(db, request))


def _started(claimed: list[Claimed]) -> list[Claimed]:
    if claimed:
        metrics.labelled(metrics.JOBS, "started").inc(len(claimed))
    return claimed


def intake_connection(db: Database) -> AbstractAsyncContextManager[AsyncConnection]:
    """A connection in autocommit to check a new run on before `enqueue`, which may
    write on it too: the webhook intake's one checkout."""
    return backend_for(db).intake_connection(db)


async def enqueue(
    db: Database, job: dict[str, Any], *, cost: int, held: AsyncConnection | None = None
) -> bool:
    """Insert `job`, take its `cost` in credits and write the ledger row, atomically;
    False, with nothing written, when the balance is short. `held`: the caller's
    connection from `intake_connection`, if it holds one.

    On PostgreSQL this is one statement in autocommit (`WITH debit AS (UPDATE users …),
    ledger AS (INSERT …) INSERT INTO jobs SELECT … FROM debit`, notifying workers), built
    from billing's debit and ledger statements; on SQLite, one transaction with the other
    runs queued meanwhile (`batching`).
    """
    queued = await backend_for(db).enqueue(db, job, cost=cost, held=held)
    if queued:
        metrics.labelled(metrics.JOBS, "enqueued").inc()
    return queued


async def add(session: AsyncSession, job: Job) -> None:
    """Queue `job` in the caller's transaction (its credits already taken)."""
    session.add(job)
    await session.flush()
    await notify(session)
    metrics.labelled(metrics.JOBS, "enqueued").inc()  # counted before commit: a rollback is rare


async def requeue(session: AsyncSession, job: Job) -> None:
    """A replay is a new attempt group: its steps send new idempotency keys (the last
    ones failed for good), and it gets a fresh allowance of crashes."""
    await reset_failed_steps(session, job_id=job.id)
    job.status, job.run_at, job.error, job.finished_at = QUEUED, utcnow(), None, None
    job.replays += 1
    job.crashes = 0
    await session.flush()
    await notify(session)


async def notify(session: Connection) -> None:
    """Wake listening workers on PostgreSQL; delivered when the transaction commits."""
    await backend_for(session).notify(session)


async def heartbeat(
    session: Connection, *, worker_id: str, running: list[str], lease: timedelta, now: datetime
) -> int:
    """Extend the leases of the jobs this worker is running; the number still held."""
    if not running:
        return 0
    return rowcount(
        await session.execute(statements.extend_leases(worker_id, running, now + lease))
    )


async def write_batch(session: Connection, *, worker_id: str, writes: list[JobWrite]) -> set[str]:
    """Write many jobs' checkpoints and states in this transaction; the ids still owned.

    Only jobs this worker still holds are written: one taken over or cancelled meanwhile
    is left alone. A final state queues the run's callback in the same transaction.
    """
    owned = await backend_for(session).write(session, worker_id, writes)
    for write in writes:
        job = owned.get(write.job_id)
        if job is not None and write.state and write.state.final and job.callback_url:
            await callbacks.enqueue(
                session,
                job_id=job.id,
                user_id=job.user_id,
                workflow_id=job.workflow_id,
                status=write.state.status,
                result=write.state.result,
                error=write.state.error,
                url=job.callback_url,
            )
    return set(owned)


async def write_and_claim(
    db: Database, *, worker_id: str, writes: list[JobWrite], claim: ClaimRequest | None
) -> tuple[set[str], list[Claimed]]:
    """`write_batch` and, if asked, `claim` together, committed on their own, where a
    loaded worker would otherwise pay for two: one statement and one round trip on
    PostgreSQL, one transaction in one hop to the driver's thread on SQLite. The ids
    still owned, and the jobs claimed. Not for writes that queue a callback
    (`write_batch` does that, in the caller's transaction)."""
    backend = backend_for(db)
    owned, claimed = await backend.write_and_claim(db, worker_id, writes, claim)
    return set(owned), _started(claimed)


async def beat(
    session: Connection,
    *,
    worker_id: str,
    host: str,
    pid: int,
    concurrency: int,
    now: datetime,
    finished_per_s: float = 0.0,
) -> None:
    """Record that `worker_id` is alive now, and how fast it has been finishing runs."""
    dialect = backend_for(session).dialect
    await session.execute(
        statements.beat(dialect, worker_id, host, pid, concurrency, now, finished_per_s)
    )


def alive_since(now: datetime, *, heartbeat_s: float) -> datetime:
    """Workers that beat since then are alive: one silent for two beats and a half is
    dead (a beat may be late, not twice)."""
    return now - timedelta(seconds=heartbeat_s * 2.5)


async def drain_rate(session: Connection, *, alive_since: datetime) -> float:
    """Runs the live workers finish per second, together (as of their last beats)."""
    return float(await session.scalar(statements.drain_rate(alive_since)) or 0.0)


async def waiting(session: Connection, *, user_id: str | None, up_to: int) -> int:
    """Waiting runs of `user_id` (everyone's if None), counted no further than `up_to`."""
    return int(await session.scalar(statements.waiting(user_id, up_to)) or 0)


async def last_beat(session: Connection, *, host: str) -> datetime | None:
    """The newest heartbeat of a worker on `host`, if any."""
    newest: datetime | None = await session.scalar(statements.last_beat(host))
    return newest


async def forget_worker(session: Connection, *, worker_id: str) -> None:
    """A worker that stopped cleanly (its jobs handed back) leaves the table."""
    await session.execute(statements.forget_worker(worker_id))


async def forget_silent_workers(session: Connection, *, before: datetime) -> int:
    """Delete the rows of workers that have not beaten since `before` (long dead)."""
    return rowcount(await session.execute(statements.forget_silent_workers(before)))


async def recover_lost(
    session: Connection, *, now: datetime, silent_since: datetime, max_crashes: int
) -> int:
    """Requeue running jobs whose worker died: its heartbeat is older than
    `silent_since`, or (a worker that never beat) their lease expired. Each such loss
    counts against the job: one lost `max_crashes` times fails."""
    result = await session.execute(statements.recover_lost(silent_since, max_crashes), {"now": now})
    rows = result.all()
    if rows:
        metrics.LEASES_RECOVERED.inc(len(rows))
    await _queue_callbacks(session, rows)
    return len(rows)


async def record_crash(
    session: Connection,
    *,
    job_id: str,
    worker_id: str,
    error: str,
    max_crashes: int,
    now: datetime,
    retry_at: datetime,
) -> str | None:
    """The worker running `job_id` crashed on it outside any step: count it, and fail the
    job at `max_crashes`; the job's new status (None if this worker no longer held it)."""
    result = await session.execute(
        statements.record_crash(job_id, worker_id, error, max_crashes, retry_at), {"now": now}
    )
    rows = result.all()
    await _queue_callbacks(session, rows)
    return rows[0].status if rows else None


async def _queue_callbacks(session: Connection, rows: Any) -> None:
    for row in rows:
        if row.status == FAILED and row.callback_url:
            await callbacks.enqueue(
                session,
                job_id=row.id,
                user_id=row.user_id,
                workflow_id=row.workflow_id,
                status=FAILED,
                result=None,
                error=row.error,
                url=row.callback_url,
            )


async def vacuum_if_needed(
    connection: AsyncConnection,
    *,
    dead_rows: int = VACUUM_AFTER_DEAD_ROWS,
    analyze_every_s: float = ANALYZE_EVERY_S,
) -> bool:
    """Keep the jobs table's statistics fresh, and with autovacuum off, its dead rows
    few (PostgreSQL; see `backends.PostgresBackend.vacuum_if_needed`)."""
    return await backend_for(connection).vacuum_if_needed(
        connection, dead_rows=dead_rows, analyze_every_s=analyze_every_s
    )


async def release(
    session: Connection,
    *,
    worker_id: str,
    now: datetime,
    keep: list[str] | None = None,
    leased_before: datetime | None = None,
    lease: timedelta | None = None,
) -> int:
    """Hand back the jobs this worker holds, due at once: all of them (a graceful
    shutdown), or all but `keep`, the ones it is still running (a job whose task ended
    without writing its state, because the database was away, is held by nobody). With
    `leased_before` (when the worker looked at what it runs, or its oldest claim in
    flight began), only jobs claimed or renewed before then, for `lease`: jobs claimed
    since are not orphans."""
    expiring_before = None if leased_before is None or lease is None else leased_before + lease
    statement = statements.release(worker_id, now, keep or [], expiring_before)
    return rowcount(await session.execute(statement))


async def cancel(session: Connection, *, job_id: str, now: datetime) -> bool:
    """Cancel a waiting or running job; False when it had finished meanwhile."""
    cancelled = rowcount(await session.execute(statements.cancel(job_id, now))) > 0
    if cancelled:
        metrics.labelled(metrics.JOBS, "cancelled").inc()
    return cancelled


async def release_held(
    session: Connection | AsyncSession, *, now: datetime, user_id: str | None, due_only: bool
) -> int:
    """Put held jobs back in the queue (see `statements.release_held`); how many."""
    statement = statements.release_held(now, user_id=user_id, due_only=due_only)
    return rowcount(await session.execute(statement))


async def anything_due_soon(session: Connection, *, horizon: datetime) -> bool:
    """Whether a job is running, or waiting and due by `horizon`."""
    return bool(await session.scalar(statements.due_soon(horizon)))


async def purge_finished(session: Connection, *, before: datetime) -> int:
    """Delete finished jobs (and their steps) that finished before `before`."""
    return rowcount(await session.execute(statements.purge_finished(before)))


async def load_steps(session: AsyncSession, *, job_id: str) -> dict[str, JobStep]:
    rows: list[JobStep] = list(await session.scalars(statements.steps_of(job_id)))
    return {step.step_id: step for step in rows}


async def reset_failed_steps(session: Connection, *, job_id: str) -> None:
    """Before a replay: failed steps get a fresh set of attempts."""
    await session.execute(statements.reset_failed_steps(job_id))


@dataclass(frozen=True)
class QueueStats:
    """The queue as an operator watches it."""

    by_status: dict[str, int]
    oldest_waiting_s: float | None  # how long the longest-due waiting job has waited
    workers_alive: int


async def stats(session: Connection, *, now: datetime, alive_since: datetime) -> QueueStats:
    by_status = {
        str(status): int(count) for status, count in await session.execute(statements.by_status())
    }
    oldest = await session.scalar(statements.oldest_due(now))
    alive = await session.scalar(statements.workers_alive(alive_since))
    return QueueStats(
        by_status=by_status,
        oldest_waiting_s=(now - oldest).total_seconds() if oldest is not None else None,
        workers_alive=int(alive or 0),
    )


@dataclass(frozen=True)
class WorkerSeen:
    id: str
    host: str
    pid: int
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime


async def workers_seen(session: Connection) -> list[WorkerSeen]:
    """Every worker with a row (alive, or silent and not yet forgotten), latest beat first."""
    return [WorkerSeen(*row) for row in await session.execute(statements.workers_seen())]


@dataclass(frozen=True)
class SilentWorker:
    id: str
    host: str
    pid: int
    heartbeat_at: datetime


async def silent_workers(session: Connection, *, silent_since: datetime) -> list[SilentWorker]:
    """Workers that stopped beating without stopping cleanly (crashed, hung, cut off)."""
    rows = await session.execute(statements.silent_workers(silent_since))
    return [SilentWorker(*row) for row in rows]


async def failed_between(
    session: Connection, *, since: datetime, until: datetime
) -> list[tuple[str, int]]:
    """(workflow id, runs) that failed into the dead letters in [since, until), most first."""
    rows = await session.execute(statements.failed_between(since, until))
    return [(str(workflow_id), int(count)) for workflow_id, count in rows]


async def runs_per_day(
    session: Connection, *, days: int, now: datetime, user_id: str | None = None
) -> list[tuple[date, int]]:
    """Runs created on each of the last `days` UTC days, oldest first (zeros kept):
    everyone's, or one user's."""
    first = now.date() - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    dialect = backend_for(session).dialect
    counted = {
        str(day): int(count)
        for day, count in await session.execute(statements.runs_per_day(dialect, since, user_id))
    }
    return [
        (day, counted.get(day.isoformat(), 0))
        for day in (first + timedelta(days=offset) for offset in range(days))
    ]
