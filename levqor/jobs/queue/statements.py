"""Every statement on the queue's rows (`jobs`, `job_steps`, `workers`), named, in one place.

The operations in `levqor.jobs.queue` run them; where PostgreSQL and SQLite need different
SQL, the two back-ends (`backends.py`) choose between the statements here.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnClause,
    ColumnElement,
    Delete,
    Select,
    String,
    Update,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from levqor.billing import service as billing
from levqor.db.base import UTCDateTime, upsert, utc_day
from levqor.jobs.models import (
    CANCELLED,
    FAILED,
    FINAL_STATES,
    HELD,
    QUEUED,
    RETRYING,
    RUNNING,
    RUNNING_SQL,
    WAITING_SQL,
    WAITING_STATES,
    JobStep,
    job_steps_table,
    jobs_table,
    workers_table,
)
from levqor.jobs.queue.states import Claimed

CHANNEL = "levqor_jobs"


# The users with waiting runs, one index probe each (a skip scan of ix_jobs_user_waiting;
# NULL ends the list).
WAITING_USERS = """
WITH RECURSIVE waiting_users(user_id) AS (
    SELECT (SELECT user_id FROM jobs WHERE status IN ('queued', 'retrying')
            ORDER BY user_id, priority DESC, run_at, id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.user_id FROM jobs j
            WHERE j.status IN ('queued', 'retrying') AND j.user_id > w.user_id
            ORDER BY j.user_id, j.priority DESC, j.run_at, j.id LIMIT 1)
    FROM waiting_users w WHERE w.user_id IS NOT NULL
)"""

# Claiming, one statement per dialect. Up to :limit due runs become this worker's; one
# user holds at most :per_user running runs, and never every slot of the live workers
# (:concurrency, this claimer's, plus that of the workers that beat since :alive_since,
# less one: one tenant's slow steps cannot stall everybody else).
#
# PostgreSQL: the users with waiting runs are found by a skip scan of
# ix_jobs_user_waiting, one probe per user, not per run (the probes order by all of its
# columns, so no other index of user_id, which also holds finished runs, serves them).
# Each user still under the cap gives at most its room's worth of its next due runs,
# locked, straight from that index. A user at the limit costs one probe however long
# its backlog (a filter on the waiting index in priority order walked it every claim).
# The update finds the rows it claims by the row versions the claim locked (`ctid`), not
# by id: each id lookup walked the primary key past the entries of every version the
# queue's updates left (about 22 index pages a run before a vacuum). A version locked
# here is the one visible to the update unless another transaction changed the row
# since this statement began; then it is left for the next claim, never claimed twice.
# (`= ANY(ARRAY(…))` keeps the update on those row versions: a generic plan cannot see
# how small LIMIT :limit is, and would hash the whole table.)
# The claim's CTEs after WAITING_USERS; {leaving} adds back, per user, the runs the same
# statement hands back (a write riding along, see POSTGRES_WRITE_AND_CLAIM): they are
# still `running` in its snapshot.
_POSTGRES_CLAIM_CTES = """, fleet AS (
    SELECT CAST(:concurrency AS integer) - 1 + coalesce(sum(concurrency), 0) AS spare
    FROM workers WHERE heartbeat_at >= :alive_since AND id <> :worker
), cap AS (
    SELECT greatest(1, least(spare, CAST(:per_user AS integer))) AS n FROM fleet
), open_users AS (
    SELECT w.user_id, cap.n - coalesce(
        (SELECT count(*) FROM jobs r WHERE r.user_id = w.user_id AND r.status = 'running'), 0
    ){leaving} AS room
    FROM waiting_users w CROSS JOIN cap
    WHERE w.user_id IS NOT NULL
), candidates AS (
    SELECT c.ctid, c.priority, c.run_at, c.id
    FROM open_users u CROSS JOIN LATERAL (
        SELECT j.ctid, j.priority, j.run_at, j.id FROM jobs j
        WHERE j.user_id = u.user_id AND j.status IN ('queued', 'retrying') AND j.run_at <= :now
        ORDER BY j.user_id, j.priority DESC, j.run_at, j.id
        LIMIT least(u.room, CAST(:limit AS integer))
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE u.room > 0
), chosen AS (
    SELECT ctid FROM candidates ORDER BY priority DESC, run_at, id LIMIT :limit
)"""
_POSTGRES_CLAIM_UPDATE = """
UPDATE jobs SET status = 'running', lease_owner = :worker, lease_expires_at = :until,
    attempts = jobs.attempts + 1, started_at = coalesce(jobs.started_at, :now)
WHERE jobs.ctid = ANY(ARRAY(SELECT ctid FROM chosen))
RETURNING jobs.id, jobs.user_id, jobs.workflow_id, jobs.workflow_version, jobs.input,
    jobs.attempts, jobs.callback_url, jobs.crashes, jobs.replays"""


def _claimed_columns() -> list[ColumnClause[Any]]:
    """What a claim returns, in order: `Claimed`'s fields. Named in order, a text
    statement's result layout is worked out once per statement, not once per execution
    (SQLAlchemy caches it only for columns given in order)."""
    return [
        column(field.name, JSON if field.name == "input" else None) for field in fields(Claimed)
    ]


_CLAIM_TIMES = (
    bindparam("now", type_=UTCDateTime),
    bindparam("until", type_=UTCDateTime),
    bindparam("alive_since", type_=UTCDateTime),
)
POSTGRES_CLAIM = (
    text(WAITING_USERS + _POSTGRES_CLAIM_CTES.format(leaving="") + _POSTGRES_CLAIM_UPDATE)
    .bindparams(*_CLAIM_TIMES)
    .columns(*_claimed_columns())
)


# SQLite: the same plan without LATERAL (each open user's next runs come through a
# correlated `IN (… LIMIT :limit)`, on ix_jobs_user_waiting by name: the planner
# preferred walking ix_jobs_waiting past other users' runs; then each user's room is
# kept by rank) and without row locks (its writers are serial).
SQLITE_CLAIM = (
    text(
        WAITING_USERS  # noqa: S608  (a constant: nothing outside is formatted in)
        + """, fleet AS (
    SELECT :concurrency - 1 + coalesce(sum(concurrency), 0) AS spare
    FROM workers WHERE heartbeat_at >= :alive_since AND id <> :worker
), cap AS (
    SELECT max(1, min(spare, :per_user)) AS n FROM fleet
), open_users AS (
    SELECT w.user_id, cap.n - (
        SELECT count(*) FROM jobs r WHERE r.user_id = w.user_id AND r.status = 'running'
    ) AS room
    FROM waiting_users w CROSS JOIN cap
    WHERE w.user_id IS NOT NULL
), candidates AS (
    SELECT j.id, j.priority, j.run_at, u.room, row_number() OVER (
        PARTITION BY j.user_id ORDER BY j.priority DESC, j.run_at, j.id
    ) AS slot
    FROM open_users u JOIN jobs j ON j.id IN (
        SELECT c.id FROM jobs c INDEXED BY ix_jobs_user_waiting
        WHERE c.user_id = u.user_id AND c.status IN ('queued', 'retrying') AND c.run_at <= :now
        ORDER BY c.user_id, c.priority DESC, c.run_at, c.id
        LIMIT :limit
    )
    WHERE u.room > 0
), chosen AS (
    SELECT id FROM candidates WHERE slot <= room ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
UPDATE jobs SET status = 'running', lease_owner = :worker, lease_expires_at = :until,
    attempts = attempts + 1, started_at = coalesce(started_at, :now)
WHERE id IN (SELECT id FROM chosen)
RETURNING id, user_id, workflow_id, workflow_version, input, attempts, callback_url,
    crashes, replays
"""
    )
    .bindparams(*_CLAIM_TIMES)
    .columns(*_claimed_columns())
)


@cache
def insert_paid_job(columns: tuple[str, ...]) -> Any:
    debit = billing.debit_statement().cte("debit")
    job_id = bindparam("job_id", type_=jobs_table.c.id.type)  # the same as `job_{id}`
    ledger = billing.run_entry_from(debit, job_id=job_id).cte("ledger")
    source = select(
        *(bindparam(f"job_{name}", type_=jobs_table.c[name].type) for name in columns)
    ).select_from(debit)
    return (
        insert(jobs_table)
        .from_select(list(columns), source)
        .returning(jobs_table.c.id)
        .add_cte(ledger)
    )


STATE_UPDATE = (
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


# A write without a state (a checkpoint) leaves the job's columns as they are; with one,
# the job leaves this worker. `w.status IS NULL` tells the two apart. The batch comes as
# two JSON documents, read as rows: one array parameter per column cost the driver a
# type check per element (asyncpg asks each whether it is a nested array), which made
# binding a batch of ten dearer than the round trip itself.
_POSTGRES_WRITE_CTES = """
w AS (
    SELECT * FROM json_to_recordset(CAST(:writes AS json)) AS w (
        id varchar, status varchar, result text, error text, run_at timestamptz,
        finished_at timestamptz
    )
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
    RETURNING jobs.id, jobs.user_id, jobs.workflow_id, jobs.callback_url, jobs.status
), steps AS (
    INSERT INTO job_steps
        (job_id, step_id, position, status, output, error, attempts, started_at, finished_at)
    SELECT s.job_id, s.step_id, s.position, s.status, CAST(s.output AS json), s.error,
           s.attempts, s.started_at, s.finished_at
    FROM json_to_recordset(CAST(:steps AS json)) AS s (
        job_id varchar, step_id varchar, position integer, status varchar, output text,
        error text, attempts integer, started_at timestamptz, finished_at timestamptz
    )
    WHERE s.job_id IN (SELECT id FROM owned)
    ON CONFLICT (job_id, step_id) DO UPDATE SET
        position = excluded.position, status = excluded.status, output = excluded.output,
        error = excluded.error, attempts = excluded.attempts,
        started_at = excluded.started_at, finished_at = excluded.finished_at
)"""
_WRITE_DOCUMENTS = (bindparam("writes", type_=String), bindparam("steps", type_=String))
POSTGRES_WRITE = (
    text(
        "WITH" + _POSTGRES_WRITE_CTES + "\nSELECT id, user_id, workflow_id, callback_url FROM owned"
    )
    .bindparams(*_WRITE_DOCUMENTS)
    .columns(*map(column, ("id", "user_id", "workflow_id", "callback_url")))
)

# A write and the next claim in one statement and one commit, for a worker whose slots
# freed while its jobs' writes waited: one round trip instead of two under load. The
# claim sees the snapshot from before the write, so the runs the write hands back
# (`leaving`) are added back to their users' room. Rows come back tagged: `claimed`
# false for the written jobs (those still held), true for the claimed ones.
POSTGRES_WRITE_AND_CLAIM = (
    text(
        WAITING_USERS  # noqa: S608  (constants: nothing outside is formatted in)
        + ","
        + _POSTGRES_WRITE_CTES
        + """, leaving AS (
    SELECT user_id, count(*) AS n FROM owned WHERE status <> 'running' GROUP BY user_id
)"""
        + _POSTGRES_CLAIM_CTES.format(
            leaving=" + coalesce((SELECT n FROM leaving l WHERE l.user_id = w.user_id), 0)"
        )
        + ", claimed AS ("
        + _POSTGRES_CLAIM_UPDATE
        + """
)
SELECT false AS claimed, id, user_id, workflow_id, CAST(NULL AS integer) AS workflow_version,
    CAST(NULL AS json) AS input, CAST(NULL AS integer) AS attempts, callback_url,
    CAST(NULL AS integer) AS crashes, CAST(NULL AS integer) AS replays
FROM owned
UNION ALL
SELECT true, id, user_id, workflow_id, workflow_version, input, attempts, callback_url,
    crashes, replays
FROM claimed
"""
    )
    .bindparams(*_WRITE_DOCUMENTS, *_CLAIM_TIMES)
    .columns(column("claimed"), *_claimed_columns())
)


@cache
def upsert_steps(dialect: str) -> Any:
    statement = upsert(dialect, job_steps_table)
    changed = {
        column.name: statement.excluded[column.name]
        for column in job_steps_table.columns
        if column.name not in ("id", "job_id", "step_id")
    }
    return statement.on_conflict_do_update(index_elements=["job_id", "step_id"], set_=changed)


def crash_outcome(max_crashes: int, reason: str, retry_at: Any) -> dict[str, Any]:
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


FINISHED_COLUMNS = (
    jobs_table.c.id,
    jobs_table.c.user_id,
    jobs_table.c.workflow_id,
    jobs_table.c.status,
    jobs_table.c.error,
    jobs_table.c.callback_url,
)


# Due: with autovacuum off (for the server or for this table), a vacuum once dead rows
# pile up. An analyze as soon as the number of rows has moved a tenth away from the
# planner's estimate (`reltuples`), and once a tenth of the rows changed otherwise, but
# then no sooner than :every seconds after the last analyze.
UPKEEP_DUE = text(
    """
WITH t AS (
    SELECT (current_setting('autovacuum') = 'off' OR EXISTS (
               SELECT FROM unnest(c.reloptions) o
               WHERE o ~* '^autovacuum_enabled=(false|off|no|0|f|n)$'
           )) AS on_our_own,
           s.n_dead_tup, s.n_live_tup, s.n_mod_since_analyze,
           greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at,
           :changes + :scale * greatest(c.reltuples, 0) AS threshold,
           greatest(c.reltuples, 0) AS estimate
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.relid = 'jobs'::regclass
)
SELECT on_our_own AND n_dead_tup >= :dead AS vacuum,
       abs(n_live_tup - estimate) >= threshold
       OR (n_mod_since_analyze >= threshold
           AND coalesce(analyzed_at < now() - make_interval(secs => :every), true)) AS analyze
FROM t
"""
)


# The rows of a batch's jobs its worker still holds (SQLite's write path; its writers are
# serial, so nothing changes them between this and the writes). The ids come as one JSON
# array: one statement text for every batch size.
SQLITE_OWNED = text(
    "SELECT id, user_id, workflow_id, callback_url FROM jobs WHERE"  # noqa: S608  (constants)
    " id IN (SELECT value FROM json_each(:ids)) AND lease_owner = :worker AND " + RUNNING_SQL
)


def extend_leases(worker_id: str, running: list[str], until: datetime) -> Update:
    jobs = jobs_table.c
    return (
        update(jobs_table)
        .where(jobs.lease_owner == worker_id, text(RUNNING_SQL), jobs.id.in_(running))
        .values(lease_expires_at=until)
    )


def release(
    worker_id: str, now: datetime, keep: list[str], expiring_before: datetime | None = None
) -> Update:
    jobs = jobs_table.c
    statement = update(jobs_table).where(
        jobs.lease_owner == worker_id, text(RUNNING_SQL), jobs.id.not_in(keep)
    )
    if expiring_before is not None:
        statement = statement.where(jobs.lease_expires_at < expiring_before)
    return statement.values(status=QUEUED, run_at=now, lease_owner=None, lease_expires_at=None)


def recover_lost(silent_since: datetime, max_crashes: int) -> Update:
    """Running jobs whose worker went silent, or whose lease ran out, count a crash."""
    silent = select(workers_table.c.id).where(workers_table.c.heartbeat_at < silent_since)
    lost = or_(
        jobs_table.c.lease_expires_at < bindparam("now", type_=UTCDateTime),
        jobs_table.c.lease_owner.in_(silent),
    )
    return (
        update(jobs_table)
        .where(text(RUNNING_SQL), lost)
        # Due again at once: its run_at is when it was first due.
        .values(
            crash_outcome(max_crashes, "its worker stopped while running it", jobs_table.c.run_at)
        )
        .returning(*FINISHED_COLUMNS)
    )


def record_crash(
    job_id: str, worker_id: str, error: str, max_crashes: int, retry_at: datetime
) -> Update:
    return (
        update(jobs_table)
        .where(
            jobs_table.c.id == job_id,
            jobs_table.c.lease_owner == worker_id,
            text(RUNNING_SQL),
        )
        .values(crash_outcome(max_crashes, error, retry_at))
        .returning(*FINISHED_COLUMNS)
    )


def cancel(job_id: str, now: datetime) -> Update:
    """A waiting or running job, cancelled; a worker holding it loses it."""
    return (
        update(jobs_table)
        .where(jobs_table.c.id == job_id, jobs_table.c.status.in_((*WAITING_STATES, HELD, RUNNING)))
        .values(status=CANCELLED, finished_at=now, lease_owner=None, lease_expires_at=None)
    )


def release_held(now: datetime, *, user_id: str | None, due_only: bool) -> Update:
    """Held jobs back to the queue, due now: one user's, or everyone's with None; with
    `due_only`, just those whose hold has run out."""
    jobs = jobs_table.c
    conditions = [jobs.status == HELD]
    if user_id is not None:
        conditions.append(jobs.user_id == user_id)
    if due_only:
        conditions.append(jobs.run_at <= now)
    return update(jobs_table).where(*conditions).values(status=QUEUED, run_at=now, error=None)


def due_soon(horizon: datetime) -> Select[Any]:
    """How many jobs are running, or waiting and due by `horizon`."""
    jobs = jobs_table.c
    waiting: ColumnElement[bool] = and_(jobs.status.in_(WAITING_STATES), jobs.run_at <= horizon)
    return select(func.count()).select_from(jobs_table).where(or_(waiting, jobs.status == RUNNING))


def purge_finished(before: datetime) -> Delete:
    """Finished jobs older than `before` (their steps go with them, ON DELETE CASCADE)."""
    jobs = jobs_table.c
    return delete(jobs_table).where(jobs.status.in_(FINAL_STATES), jobs.finished_at < before)


def beat(
    dialect: str,
    worker_id: str,
    host: str,
    pid: int,
    concurrency: int,
    now: datetime,
    finished_per_s: float,
) -> Any:
    statement = upsert(dialect, workers_table).values(
        id=worker_id,
        host=host,
        pid=pid,
        concurrency=concurrency,
        started_at=now,
        heartbeat_at=now,
        finished_per_s=finished_per_s,
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["id"],
        set_={"heartbeat_at": excluded.heartbeat_at, "finished_per_s": excluded.finished_per_s},
    )


def drain_rate(alive_since: datetime) -> Select[Any]:
    """Runs finished per second by the live workers together."""
    workers = workers_table.c
    return select(func.coalesce(func.sum(workers.finished_per_s), 0.0)).where(
        workers.heartbeat_at >= alive_since
    )


def waiting(user_id: str | None, up_to: int) -> Select[Any]:
    """Waiting runs, one user's or everyone's, counted up to `up_to` (an index range of
    at most that many entries, however long the queue)."""
    jobs = jobs_table.c
    found = select(literal(1)).select_from(jobs_table).where(text(WAITING_SQL))
    if user_id is not None:
        found = found.where(jobs.user_id == user_id)
    return select(func.count()).select_from(found.limit(up_to).subquery())


def last_beat(host: str) -> Select[Any]:
    return select(func.max(workers_table.c.heartbeat_at)).where(workers_table.c.host == host)


def forget_worker(worker_id: str) -> Delete:
    return delete(workers_table).where(workers_table.c.id == worker_id)


def forget_silent_workers(before: datetime) -> Delete:
    return delete(workers_table).where(workers_table.c.heartbeat_at < before)


def steps_of(job_id: str) -> Select[Any]:
    return select(JobStep).where(JobStep.job_id == job_id)


def reset_failed_steps(job_id: str) -> Delete:
    steps = job_steps_table.c
    return delete(job_steps_table).where(steps.job_id == job_id, steps.status == FAILED)


def by_status() -> Select[Any]:
    return select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)


def oldest_due(now: datetime) -> Select[Any]:
    """The run_at of the waiting job due longest ago (walks ix_jobs_waiting)."""
    jobs = jobs_table.c
    return select(func.min(jobs.run_at)).where(text(WAITING_SQL), jobs.run_at <= now)


def workers_alive(since: datetime) -> Select[Any]:
    return select(func.count()).where(workers_table.c.heartbeat_at >= since)


def runs_per_day(dialect: str, since: datetime, user_id: str | None) -> Select[Any]:
    day = utc_day(jobs_table.c.created_at, dialect)
    query = select(day, func.count()).where(jobs_table.c.created_at >= since)
    if user_id is not None:
        query = query.where(jobs_table.c.user_id == user_id)
    return query.group_by(day)


def silent_workers(silent_since: datetime) -> Select[Any]:
    """Workers whose rows remain (a clean stop deletes its row) but beat no more."""
    workers = workers_table.c
    return (
        select(workers.id, workers.host, workers.pid, workers.heartbeat_at)
        .where(workers.heartbeat_at < silent_since)
        .order_by(workers.heartbeat_at)
    )


def failed_between(since: datetime, until: datetime) -> Select[Any]:
    """Runs that ended `failed` (into the dead letters) in [since, until), by workflow."""
    jobs = jobs_table.c
    return (
        select(jobs.workflow_id, func.count())
        .where(jobs.status == FAILED, jobs.finished_at >= since, jobs.finished_at < until)
        .group_by(jobs.workflow_id)
        .order_by(func.count().desc())
    )


def workers_seen() -> Select[Any]:
    workers = workers_table.c
    return select(
        workers.id,
        workers.host,
        workers.pid,
        workers.concurrency,
        workers.started_at,
        workers.heartbeat_at,
    ).order_by(workers.heartbeat_at.desc())
