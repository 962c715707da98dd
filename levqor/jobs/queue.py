"""Queue operations on the jobs table. Every statement of the queue lives here.

Claiming marks up to `limit` due jobs `running` under this worker's lease, in one
statement (`WITH candidates AS (SELECT … FOR UPDATE SKIP LOCKED) … UPDATE … RETURNING` on
PostgreSQL; the same without the lock clause on SQLite, whose writers are serial). A
running job whose lease expired (its worker died) is put back in the queue by
`recover_lost`, which every worker runs at start and with each heartbeat: a job whose
worker stopped beating for two heartbeats (or, failing that, whose lease ran out) is
resumed by another worker within seconds.

Every write after the claim is guarded by `lease_owner = me AND status = 'running'`: a
worker that lost its job (lease taken over, or the job cancelled) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor.billing import service as billing
from levqor.db.base import UTCDateTime, upsert, utcnow
from levqor.db.engine import Database
from levqor.jobs import callbacks
from levqor.jobs.models import (
    FAILED,
    QUEUED,
    RETRYING,
    RUNNING,
    RUNNING_SQL,
    SUCCEEDED,
    WAITING_SQL,
    Job,
    JobStep,
    job_steps_table,
    jobs_table,
    workers_table,
)

CANDIDATES_PER_SLOT = 2
Connection = AsyncSession | AsyncConnection  # the queue runs on either


def dialect_of(connection: Connection) -> str:
    if isinstance(connection, AsyncConnection):
        return connection.dialect.name
    return connection.get_bind().dialect.name


@dataclass(frozen=True)
class Claimed:
    id: str
    user_id: str
    workflow_id: str
    workflow_version: int
    input: Any
    attempts: int
    callback_url: str | None = None
    crashes: int = 0
    replays: int = 0


async def claim(
    session: Connection,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    now: datetime,
    max_running_per_user: int,
) -> list[Claimed]:
    """Take up to `limit` due jobs, at most `max_running_per_user` running per user.

    One statement: candidates are read past users already at their limit, over-read so
    one user's backlog cannot fill a whole batch, ranked per user, and the best `limit`
    that keep every user within the limit are marked running. (Two claimers racing on
    PostgreSQL each see only committed claims, so a user can briefly exceed the limit by
    one batch per concurrent claimer.)
    """
    rows = await session.execute(
        _CLAIM,
        {
            "now": now,
            "worker": worker_id,
            "until": now + lease,
            "limit": limit,
            "over_read": limit * CANDIDATES_PER_SLOT,
            "per_user": max_running_per_user,
        },
    )
    return [Claimed(*row) for row in rows]


def _claim_statement() -> Any:
    jobs = jobs_table
    now = bindparam("now", type_=UTCDateTime)
    per_user = bindparam("per_user", type_=Integer)
    # Every running job counts, its lease expired or not: a dead worker's jobs hold
    # their user's slots until they are requeued (within two heartbeats), so the
    # limit holds during recovery too.
    holding = text(RUNNING_SQL)  # ix_jobs_running
    users_at_limit = (
        select(jobs.c.user_id)
        .where(holding)
        .group_by(jobs.c.user_id)
        .having(func.count() >= per_user)
    )
    due = and_(text(WAITING_SQL), jobs.c.run_at <= now)  # walks ix_jobs_waiting
    candidates = (
        select(jobs.c.id, jobs.c.user_id, jobs.c.priority, jobs.c.run_at)
        .where(due, jobs.c.user_id.not_in(users_at_limit))
        .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
        .limit(bindparam("over_read", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    running = (
        select(jobs.c.user_id, func.count().label("running"))
        .where(holding, jobs.c.user_id.in_(select(candidates.c.user_id)))
        .group_by(jobs.c.user_id)
        .cte("running")
    )
    order = (candidates.c.priority.desc(), candidates.c.run_at, candidates.c.id)
    ranked = (
        select(
            candidates.c.id,
            candidates.c.priority,
            candidates.c.run_at,
            (
                func.row_number().over(partition_by=candidates.c.user_id, order_by=order)
                + func.coalesce(running.c.running, 0)
            ).label("slot"),
        )
        .outerjoin(running, running.c.user_id == candidates.c.user_id)
        .cte("ranked")
    )
    chosen = (
        select(ranked.c.id)
        .where(ranked.c.slot <= per_user)
        .order_by(ranked.c.priority.desc(), ranked.c.run_at, ranked.c.id)
        .limit(bindparam("limit", type_=Integer))
        .cte("chosen")
    )
    return (
        update(jobs)
        .where(jobs.c.id == chosen.c.id)
        .values(
            status=RUNNING,
            lease_owner=bindparam("worker"),
            lease_expires_at=bindparam("until", type_=UTCDateTime),
            attempts=jobs.c.attempts + 1,
            started_at=func.coalesce(jobs.c.started_at, now),
        )
        .returning(
            jobs.c.id,
            jobs.c.user_id,
            jobs.c.workflow_id,
            jobs.c.workflow_version,
            jobs.c.input,
            jobs.c.attempts,
            jobs.c.callback_url,
            jobs.c.crashes,
            jobs.c.replays,
        )
    )


_CLAIM = _claim_statement()


CHANNEL = "levqor_jobs"


async def enqueue(db: Database, job: dict[str, Any], *, cost: int) -> bool:
    """Insert `job`, take its `cost` in credits and write the ledger row, atomically;
    False, with nothing written, when the balance is short.

    On PostgreSQL this is one statement in autocommit (`WITH debit AS (UPDATE users …),
    ledger AS (INSERT …) INSERT INTO jobs SELECT … FROM debit`, notifying workers): every
    webhook call of a user debits the same balance row, and a lock held across round
    trips would make those calls queue behind each other. On SQLite, a short transaction.
    """
    if db.is_sqlite:
        async with db.transaction() as connection:
            charged = await billing.charge_run(
                connection, user_id=job["user_id"], amount=cost, job_id=job["id"]
            )
            if not charged:
                return False
            await connection.execute(insert(jobs_table), job)
        return True
    async with db.autocommit() as connection:
        # Prefixed: a parameter named like a users column would join the debit's SET.
        params = {f"job_{name}": value for name, value in job.items()}
        params |= {"debit_user_id": job["user_id"], "debit_amount": cost, "ledger_at": utcnow()}
        inserted = await connection.execute(_insert_paid_job(tuple(job)), params)
        return inserted.first() is not None


@cache
def _insert_paid_job(columns: tuple[str, ...]) -> Any:
    debit = billing.debit_statement().cte("debit")
    job_id = bindparam("job_id", type_=jobs_table.c.id.type)  # the same as `job_{id}`
    ledger = billing.run_entry_from(debit, job_id=job_id).cte("ledger")
    source = select(
        *(bindparam(f"job_{name}", type_=jobs_table.c[name].type) for name in columns)
    ).select_from(debit)
    return (
        insert(jobs_table)
        .from_select(list(columns), source)
        .returning(jobs_table.c.id, func.pg_notify(CHANNEL, ""))
        .add_cte(ledger)
    )


async def notify(session: AsyncSession) -> None:
    """Wake listening workers on PostgreSQL; delivered when the transaction commits."""
    if dialect_of(session) == "postgresql":
        await session.execute(text(f"NOTIFY {CHANNEL}"))


async def heartbeat(
    session: AsyncSession, *, worker_id: str, running: list[str], lease: timedelta, now: datetime
) -> int:
    """Extend the leases of the jobs this worker is running; the number still held."""
    if not running:
        return 0
    result = await session.execute(
        update(Job)
        .where(Job.lease_owner == worker_id, text(RUNNING_SQL), Job.id.in_(running))
        .values(lease_expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JobWrite:
    """What a worker writes for one job at once: a step checkpoint, a new state, or both."""

    job_id: str
    step: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    callback: bool = False  # the job has a callback URL: a final state queues its delivery


def succeeded(result: Any, now: datetime) -> dict[str, Any]:
    return {
        "status": SUCCEEDED,
        "result": result,
        "error": None,
        "run_at": None,
        "finished_at": now,
    }


def failed(error: str, now: datetime) -> dict[str, Any]:
    """Final failure: the job goes to the dead-letter queue."""
    return {"status": FAILED, "result": None, "error": error, "run_at": None, "finished_at": now}


def retrying(run_at: datetime, error: str) -> dict[str, Any]:
    return {
        "status": RETRYING,
        "result": None,
        "error": error,
        "run_at": run_at,
        "finished_at": None,
    }


def paused(run_at: datetime) -> dict[str, Any]:
    """A delay step: the job waits, holding no worker, and resumes after it."""
    return {"status": QUEUED, "result": None, "error": None, "run_at": run_at, "finished_at": None}


_STATE_UPDATE = (
    update(jobs_table)
    .where(jobs_table.c.id == bindparam("w_id"))
    .values(
        status=bindparam("w_status"),
        result=bindparam("w_result", type_=JSON),
        error=bindparam("w_error"),
        run_at=func.coalesce(bindparam("w_run_at", type_=UTCDateTime), jobs_table.c.run_at),
        finished_at=bindparam("w_finished_at", type_=UTCDateTime),
        lease_owner=None,
        lease_expires_at=None,
    )
)


async def write_batch(session: Connection, *, worker_id: str, writes: list[JobWrite]) -> set[str]:
    """Write many jobs' checkpoints and states in this transaction; the ids still owned.

    Only jobs this worker still holds are written: one taken over or cancelled meanwhile
    is left alone. A final state queues the run's callback in the same transaction.
    """
    if dialect_of(session) == "postgresql":
        owned = await _write_postgres(session, worker_id, writes)
    else:
        owned = await _write_portable(session, worker_id, writes)
    for write in writes:
        job = owned.get(write.job_id)
        if job is not None and write.state and write.state["finished_at"] and job.callback_url:
            await callbacks.enqueue(
                session,
                job_id=job.id,
                user_id=job.user_id,
                workflow_id=job.workflow_id,
                status=write.state["status"],
                result=write.state["result"],
                error=write.state["error"],
                url=job.callback_url,
            )
    return set(owned)


async def _write_portable(session: Connection, worker_id: str, writes: list[JobWrite]) -> Any:
    """Lock the rows still held, then one executemany per table (SQLite, in process)."""
    jobs = jobs_table.c
    owned = {
        row.id: row
        for row in await session.execute(
            select(jobs.id, jobs.user_id, jobs.workflow_id, jobs.callback_url)
            .where(
                jobs.id.in_([write.job_id for write in writes]),
                jobs.lease_owner == worker_id,
                text(RUNNING_SQL),
            )
            .with_for_update()
        )
    }
    mine = [write for write in writes if write.job_id in owned]
    steps = [{"job_id": write.job_id, **write.step} for write in mine if write.step]
    if steps:
        await session.execute(_upsert_steps(dialect_of(session)), steps)
    states = [
        {f"w_{key}": value for key, value in {"id": write.job_id, **write.state}.items()}
        for write in mine
        if write.state
    ]
    if states:
        await session.execute(_STATE_UPDATE, states)
    return owned


async def _write_postgres(session: Connection, worker_id: str, writes: list[JobWrite]) -> Any:
    """One statement and one round trip for the whole batch: the rows still held are
    updated from arrays, and their steps upserted, in data-modifying CTEs."""
    states = [write.state or {} for write in writes]
    steps = [(write.job_id, write.step) for write in writes if write.step]
    rows = await session.execute(
        _POSTGRES_WRITE,
        {
            "worker": worker_id,
            "ids": [write.job_id for write in writes],
            "statuses": [state.get("status") for state in states],
            "results": [_json(state.get("result")) for state in states],
            "errors": [state.get("error") for state in states],
            "run_ats": [state.get("run_at") for state in states],
            "finished": [state.get("finished_at") for state in states],
            **{
                f"s_{name}": [
                    _json(step[name]) if name == "output" else step[name] for _, step in steps
                ]
                for name in STEP_FIELDS
            },
            "s_job_ids": [job_id for job_id, _ in steps],
        },
    )
    return {row.id: row for row in rows}


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


STEP_FIELDS = (
    "step_id",
    "position",
    "status",
    "output",
    "error",
    "attempts",
    "started_at",
    "finished_at",
)

# A write without a state (a checkpoint) leaves the job's columns as they are; with one,
# the job leaves this worker. `w.status IS NULL` tells the two apart.
_POSTGRES_WRITE = text(
    """
WITH w AS (
    SELECT * FROM unnest(
        CAST(:ids AS varchar[]), CAST(:statuses AS varchar[]), CAST(:results AS text[]),
        CAST(:errors AS text[]), CAST(:run_ats AS timestamptz[]),
        CAST(:finished AS timestamptz[])
    ) AS w (id, status, result, error, run_at, finished_at)
), owned AS (
    UPDATE jobs SET
        status = coalesce(w.status, jobs.status),
        result = CASE WHEN w.status IS NULL THEN jobs.result ELSE CAST(w.result AS json) END,
        error = CASE WHEN w.status IS NULL THEN jobs.error ELSE w.error END,
        run_at = coalesce(w.run_at, jobs.run_at),
        finished_at = CASE WHEN w.status IS NULL THEN jobs.finished_at ELSE w.finished_at END,
        lease_owner = CASE WHEN w.status IS NULL THEN jobs.lease_owner END,
        lease_expires_at = CASE WHEN w.status IS NULL THEN jobs.lease_expires_at END
    FROM w
    WHERE jobs.id = w.id AND jobs.lease_owner = :worker AND jobs.status = 'running'
    RETURNING jobs.id, jobs.user_id, jobs.workflow_id, jobs.callback_url
), steps AS (
    INSERT INTO job_steps
        (job_id, step_id, position, status, output, error, attempts, started_at, finished_at)
    SELECT s.job_id, s.step_id, s.position, s.status, CAST(s.output AS json), s.error,
           s.attempts, s.started_at, s.finished_at
    FROM unnest(
        CAST(:s_job_ids AS varchar[]), CAST(:s_step_id AS varchar[]),
        CAST(:s_position AS integer[]), CAST(:s_status AS varchar[]),
        CAST(:s_output AS text[]), CAST(:s_error AS text[]), CAST(:s_attempts AS integer[]),
        CAST(:s_started_at AS timestamptz[]), CAST(:s_finished_at AS timestamptz[])
    ) AS s (job_id, step_id, position, status, output, error, attempts, started_at,
            finished_at)
    WHERE s.job_id IN (SELECT id FROM owned)
    ON CONFLICT (job_id, step_id) DO UPDATE SET
        position = excluded.position, status = excluded.status, output = excluded.output,
        error = excluded.error, attempts = excluded.attempts,
        started_at = excluded.started_at, finished_at = excluded.finished_at
)
SELECT id, user_id, workflow_id, callback_url FROM owned
"""
).bindparams(
    *(bindparam(name, type_=ARRAY(String)) for name in ("ids", "statuses", "results", "errors")),
    *(bindparam(name, type_=ARRAY(DateTime(timezone=True))) for name in ("run_ats", "finished")),
    *(
        bindparam(f"s_{name}", type_=ARRAY(String))
        for name in ("job_ids", "step_id", "status", "output", "error")
    ),
    *(bindparam(f"s_{name}", type_=ARRAY(Integer)) for name in ("position", "attempts")),
    *(
        bindparam(f"s_{name}", type_=ARRAY(DateTime(timezone=True)))
        for name in ("started_at", "finished_at")
    ),
)


@cache
def _upsert_steps(dialect: str) -> Any:
    statement = upsert(dialect, job_steps_table)
    changed = {
        column.name: statement.excluded[column.name]
        for column in job_steps_table.columns
        if column.name not in ("id", "job_id", "step_id")
    }
    return statement.on_conflict_do_update(index_elements=["job_id", "step_id"], set_=changed)


def _crash_outcome(max_crashes: int, reason: str, retry_at: Any) -> dict[str, Any]:
    """The columns of a job that crashed once more: it fails into the dead-letter queue
    at `max_crashes`, else it waits until `retry_at` (the lease it lost was its turn)."""
    crashes = jobs_table.c.crashes + 1
    poisoned = crashes >= max_crashes
    said = literal(f"{reason} (") + cast(crashes, String)
    return {
        "crashes": crashes,
        "status": case((poisoned, FAILED), else_=RETRYING),
        "error": case(
            (poisoned, said + literal(" times; given up)")),
            else_=said + literal(f" of {max_crashes} times)"),
        ),
        "run_at": case((poisoned, jobs_table.c.run_at), else_=retry_at),
        "finished_at": case((poisoned, bindparam("now", type_=UTCDateTime)), else_=None),
        "lease_owner": None,
        "lease_expires_at": None,
    }


async def beat(
    session: Connection, *, worker_id: str, host: str, pid: int, concurrency: int, now: datetime
) -> None:
    """Record that `worker_id` is alive now."""
    statement = upsert(dialect_of(session), workers_table).values(
        id=worker_id, host=host, pid=pid, concurrency=concurrency, started_at=now, heartbeat_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={"heartbeat_at": statement.excluded.heartbeat_at}
        )
    )


async def last_beat(session: Connection, *, host: str) -> datetime | None:
    """The newest heartbeat of a worker on `host`, if any."""
    beat: datetime | None = await session.scalar(
        select(func.max(workers_table.c.heartbeat_at)).where(workers_table.c.host == host)
    )
    return beat


async def forget_worker(session: Connection, *, worker_id: str) -> None:
    """A worker that stopped cleanly (its jobs handed back) leaves the table."""
    await session.execute(delete(workers_table).where(workers_table.c.id == worker_id))


async def recover_lost(
    session: Connection, *, now: datetime, silent_since: datetime, max_crashes: int
) -> int:
    """Requeue running jobs whose worker died: its heartbeat is older than
    `silent_since`, or (a worker that never beat) their lease expired. Each such loss
    counts against the job: one lost `max_crashes` times fails."""
    silent = select(workers_table.c.id).where(workers_table.c.heartbeat_at < silent_since)
    lost = or_(jobs_table.c.lease_expires_at < now, jobs_table.c.lease_owner.in_(silent))
    result = await session.execute(
        update(jobs_table)
        .where(text(RUNNING_SQL), lost)
        # Due again at once: its run_at is when it was first due.
        .values(
            _crash_outcome(max_crashes, "its worker stopped while running it", jobs_table.c.run_at)
        )
        .returning(*_FINISHED_COLUMNS),
        {"now": now},
    )
    rows = result.all()
    await _queue_callbacks(session, rows)
    return len(rows)


async def forget_silent_workers(session: Connection, *, before: datetime) -> int:
    """Delete the rows of workers that have not beaten since `before` (long dead)."""
    result = await session.execute(
        delete(workers_table).where(workers_table.c.heartbeat_at < before)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


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
        update(jobs_table)
        .where(
            jobs_table.c.id == job_id,
            jobs_table.c.lease_owner == worker_id,
            text(RUNNING_SQL),
        )
        .values(_crash_outcome(max_crashes, error, retry_at))
        .returning(*_FINISHED_COLUMNS),
        {"now": now},
    )
    rows = result.all()
    await _queue_callbacks(session, rows)
    return rows[0].status if rows else None


_FINISHED_COLUMNS = (
    jobs_table.c.id,
    jobs_table.c.user_id,
    jobs_table.c.workflow_id,
    jobs_table.c.status,
    jobs_table.c.error,
    jobs_table.c.callback_url,
)


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


VACUUM_AFTER_DEAD_ROWS = 5_000
# PostgreSQL's own autovacuum_analyze_threshold and _scale_factor defaults.
ANALYZE_AFTER_CHANGES, ANALYZE_SCALE = 50, 0.1

_UPKEEP_DUE = text(
    """
SELECT current_setting('autovacuum') = 'off' AND n_dead_tup >= :dead AS vacuum,
       n_mod_since_analyze >= :changes + :scale * greatest(c.reltuples, 0) AS analyze
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = 'jobs'::regclass
"""
)


async def vacuum_if_needed(
    connection: AsyncConnection, *, dead_rows: int = VACUUM_AFTER_DEAD_ROWS
) -> bool:
    """Keep the jobs table's statistics fresh, and with autovacuum off, its dead rows
    few. Analyze once a tenth of it changed (autovacuum's rule, but checked every half
    second instead of every minute): a plan cached while the table was empty scans it
    whole, and keeps doing so, one scan per foreign-key check, until the next analyze; a
    queue emptied and then refilled by a burst slowed to a crawl. Vacuum, when autovacuum
    is off, once enough dead row versions pile up (each claim otherwise walks past the
    index entries of every job claimed since). One worker at a time (an advisory lock);
    `connection` must be in autocommit."""
    if connection.dialect.name != "postgresql":
        return False
    due = (
        await connection.execute(
            _UPKEEP_DUE,
            {"dead": dead_rows, "changes": ANALYZE_AFTER_CHANGES, "scale": ANALYZE_SCALE},
        )
    ).first()
    if due is None or not (due.vacuum or due.analyze):
        return False
    if not await connection.scalar(
        text("SELECT pg_try_advisory_lock(hashtext('levqor_vacuum_jobs'))")
    ):
        return False
    try:
        command = {(True, True): "VACUUM (ANALYZE) jobs", (True, False): "VACUUM jobs"}
        await connection.execute(text(command.get((due.vacuum, due.analyze), "ANALYZE jobs")))
    finally:
        await connection.execute(text("SELECT pg_advisory_unlock(hashtext('levqor_vacuum_jobs'))"))
    return True


async def release(
    session: AsyncSession, *, worker_id: str, now: datetime, keep: list[str] | None = None
) -> int:
    """Hand back the jobs this worker holds, due at once: all of them (a graceful
    shutdown), or all but `keep`, the ones it is still running (a job whose task ended
    without writing its state, because the database was away, is held by nobody)."""
    result = await session.execute(
        update(Job)
        .where(Job.lease_owner == worker_id, text(RUNNING_SQL), Job.id.not_in(keep or []))
        .values(status=QUEUED, run_at=now, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def load_steps(session: AsyncSession, *, job_id: str) -> dict[str, JobStep]:
    rows = await session.scalars(select(JobStep).where(JobStep.job_id == job_id))
    return {step.step_id: step for step in rows}


async def reset_failed_steps(session: AsyncSession, *, job_id: str) -> None:
    """Before a replay: failed steps get a fresh set of attempts."""
    await session.execute(
        delete(JobStep).where(JobStep.job_id == job_id, JobStep.status == "failed")
    )
