"""Where PostgreSQL and SQLite differ, behind one interface.

PostgreSQL takes a paid job in one autocommit statement (debit, ledger row and insert, so
concurrent webhooks of one user never queue behind a lock held across round trips) and
wakes the workers with a NOTIFY sent after it (`wakeups`); it writes a whole batch of
checkpoints and states in one statement from two JSON documents and keeps the jobs table
analysed. SQLite, whose writers are serial anyway, does the same work in short
transactions with plain statements.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.db.sqlite_thread import Compiled, CompiledFor, run_on_driver_thread
from levqor.jobs.queue import statements
from levqor.jobs.queue.batching import EnqueueBatcher
from levqor.jobs.queue.states import (
    STEP_FIELDS,
    Claimed,
    ClaimRequest,
    JobWrite,
    StepCheckpoint,
)
from levqor.jobs.queue.wakeups import Wakeups

Connection = AsyncSession | AsyncConnection  # the queue runs on either
T = TypeVar("T")


class Backend(Protocol):
    dialect: str

    async def enqueue(
        self,
        db: Database,
        job: dict[str, Any],
        *,
        cost: int,
        held: AsyncConnection | None = None,
    ) -> bool:
        """Insert `job` and take its `cost` in credits atomically; False if short.
        `held`: the caller's connection from `intake_connection`, if it has one."""
        ...

    def intake_connection(self, db: Database) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection in autocommit for a new run's checks, on which `enqueue` may
        write too (one checkout for the whole intake)."""
        ...

    async def write(
        self, connection: Connection, worker_id: str, writes: list[JobWrite]
    ) -> dict[str, Any]:
        """Write the batch to the jobs this worker still holds; their rows by id."""
        ...

    async def claim(self, connection: Connection, claim: ClaimRequest) -> list[Claimed]:
        """Claim jobs in the caller's transaction (see `statements`): the jobs taken."""
        ...

    async def claim_alone(self, db: Database, claim: ClaimRequest) -> list[Claimed]:
        """`claim`, committed on its own."""
        ...

    async def write_and_claim(
        self, db: Database, worker_id: str, writes: list[JobWrite], claim: ClaimRequest | None
    ) -> tuple[dict[str, Any], list[Claimed]]:
        """`write`, then `claim` if asked, committed together on their own: the rows
        still held, and the jobs claimed."""
        ...

    async def notify(self, session: Connection) -> None:
        """Wake waiting workers when the transaction commits."""
        ...

    async def vacuum_if_needed(
        self, connection: AsyncConnection, *, dead_rows: int, analyze_every_s: float
    ) -> bool:
        """Keep the jobs table's statistics and dead rows in check; True if it acted."""
        ...


VACUUM_AFTER_DEAD_ROWS = 5_000
# A table whose row count holds is analyzed no more often (autovacuum_naptime's default).
ANALYZE_EVERY_S = 60.0
# PostgreSQL's own autovacuum_analyze_threshold and _scale_factor defaults.
ANALYZE_AFTER_CHANGES, ANALYZE_SCALE = 50, 0.1
# What the queue's and the run listings' plans read; not the wide JSON and text columns,
# whose sampling was two thirds of each analyze (90-98 -> 28-31 ms at 20,000 jobs).
ANALYZED_COLUMNS = (
    "(id, user_id, workflow_id, status, priority, run_at, lease_owner, lease_expires_at,"
    " created_at, started_at, finished_at)"
)


class PostgresBackend:
    dialect = "postgresql"

    def __init__(self) -> None:
        self._wakeups: weakref.WeakKeyDictionary[Database, Wakeups] = weakref.WeakKeyDictionary()

    async def enqueue(
        self,
        db: Database,
        job: dict[str, Any],
        *,
        cost: int,
        held: AsyncConnection | None = None,
    ) -> bool:
        """One statement in autocommit, on the caller's connection if it holds one; the
        workers are woken once it has committed (see `wakeups`)."""
        if held is not None:
            queued = await _insert_paid(held, job, cost)
        else:
            async with db.autocommit() as connection:
                queued = await _insert_paid(connection, job, cost)
        if queued:
            self.wakeups(db).wake(db)
        return queued

    def wakeups(self, db: Database) -> Wakeups:
        return _per_database(self._wakeups, db, Wakeups)

    def intake_connection(self, db: Database) -> AbstractAsyncContextManager[AsyncConnection]:
        """From the write pool, whose statements keep generic plans (see `make_engine`);
        intakes that wait for one are served in the order they came (`db.fairpool`)."""
        return db.autocommit()

    async def claim(self, connection: Connection, claim: ClaimRequest) -> list[Claimed]:
        rows = await connection.execute(statements.POSTGRES_CLAIM, claim_params(claim))
        return [Claimed(*row) for row in rows]

    async def write(
        self, connection: Connection, worker_id: str, writes: list[JobWrite]
    ) -> dict[str, Any]:
        """One statement and one round trip for the whole batch: the rows still held are
        updated from one JSON document and their steps upserted from another, in
        data-modifying CTEs."""
        rows = await connection.execute(
            statements.POSTGRES_WRITE, _write_documents(worker_id, writes)
        )
        return {row.id: row for row in rows}

    async def claim_alone(self, db: Database, claim: ClaimRequest) -> list[Claimed]:
        """On the connection the worker's writes keep: an idle worker claims once a run
        arrives, and checking a connection out first took as long as the claim (0.25
        of 0.74 ms with nothing to take, 0.5 of 1.9 with one run, measured in place)."""
        async with db.kept.use() as connection:
            return await self.claim(connection, claim)

    async def write_and_claim(
        self, db: Database, worker_id: str, writes: list[JobWrite], claim: ClaimRequest | None
    ) -> tuple[dict[str, Any], list[Claimed]]:
        """The batch's write and the worker's next claim, in one statement in autocommit,
        on the connection kept for them (a worker's writes take turns)."""
        async with db.kept.use() as connection:
            if claim is None:
                return await self.write(connection, worker_id, writes), []
            rows = await connection.execute(
                statements.POSTGRES_WRITE_AND_CLAIM,
                _write_documents(worker_id, writes) | claim_params(claim),
            )
            owned: dict[str, Any] = {}
            claimed: list[Claimed] = []
            for row in rows:
                if row.claimed:
                    claimed.append(Claimed(*row[1:]))
                else:
                    owned[row.id] = row
            return owned, claimed

    async def notify(self, session: Connection) -> None:
        await session.execute(text(f"NOTIFY {statements.CHANNEL}"))

    async def vacuum_if_needed(
        self, connection: AsyncConnection, *, dead_rows: int, analyze_every_s: float
    ) -> bool:
        """Analyze once the number of rows is a tenth away from the planner's estimate
        (checked every half second; autovacuum looks every minute): a plan cached while
        the table was empty scans it whole, one scan per foreign-key check, until the
        next analyze; a queue emptied and then refilled by a burst slowed to a crawl.
        Runs moving through their states leave the count as it is: once a tenth of the
        rows changed so, analyze too, but no sooner than `analyze_every_s` after the
        last analyze. Analyzing at each tenth changed, checked every half second, took
        about 35 analyzes per 20,000 runs burnt down, each re-planning every cached
        statement on the table. Vacuum, when autovacuum is off, once enough dead row
        versions pile up (each claim otherwise walks past the index entries of every
        job claimed since). One worker at a time (an advisory lock); `connection` must
        be in autocommit."""
        due = (
            await connection.execute(
                statements.UPKEEP_DUE,
                {
                    "dead": dead_rows,
                    "changes": ANALYZE_AFTER_CHANGES,
                    "scale": ANALYZE_SCALE,
                    "every": analyze_every_s,
                },
            )
        ).first()
        if due is None or not (due.vacuum or due.analyze):
            return False
        if not await connection.scalar(
            text("SELECT pg_try_advisory_lock(hashtext('levqor_vacuum_jobs'))")
        ):
            return False
        try:
            if not due.vacuum:
                command = f"ANALYZE jobs {ANALYZED_COLUMNS}"
            elif due.analyze:
                command = f"VACUUM (ANALYZE) jobs {ANALYZED_COLUMNS}"
            else:
                command = "VACUUM jobs"
            await connection.execute(text(command))
        finally:
            # A statement cut short (the worker stopping) closes the connection, and
            # the session's lock goes with it: unlocking there would raise instead.
            if not connection.invalidated:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext('levqor_vacuum_jobs'))")
                )
        return True


class SqliteBackend:
    dialect = "sqlite"

    def __init__(self) -> None:
        self._batchers: weakref.WeakKeyDictionary[Database, EnqueueBatcher] = (
            weakref.WeakKeyDictionary()
        )

    async def enqueue(
        self,
        db: Database,
        job: dict[str, Any],
        *,
        cost: int,
        held: AsyncConnection | None = None,
    ) -> bool:
        """Committed with the other runs queued meanwhile (see `batching`), never on
        `held`: writes take the write lock."""
        batcher = _per_database(self._batchers, db, lambda: EnqueueBatcher(db))
        return await batcher.enqueue(job, cost)

    def intake_connection(self, db: Database) -> AbstractAsyncContextManager[AsyncConnection]:
        return db.reading()

    async def claim(self, connection: Connection, claim: ClaimRequest) -> list[Claimed]:
        """One statement, in one hop to the driver's thread (see `db.sqlite_thread`)."""
        raw = await _bare(connection)
        prepared = _sqlite_statements(raw.dialect)
        params = prepared.claim.params(claim_params(claim))
        return await run_on_driver_thread(raw, lambda db: _claim(db, prepared, params))

    async def claim_alone(self, db: Database, claim: ClaimRequest) -> list[Claimed]:
        prepared = _sqlite_statements(db.engine.dialect)
        params = prepared.claim.params(claim_params(claim))
        return await db.sqlite_write(lambda connection: _claim(connection, prepared, params))

    async def write(
        self, connection: Connection, worker_id: str, writes: list[JobWrite]
    ) -> dict[str, Any]:
        """Find the rows still held, then one executemany per table; one hop to the
        driver's thread for all of it."""
        raw = await _bare(connection)
        prepared = _sqlite_statements(raw.dialect)
        return await run_on_driver_thread(raw, lambda db: _write(db, prepared, worker_id, writes))

    async def write_and_claim(
        self, db: Database, worker_id: str, writes: list[JobWrite], claim: ClaimRequest | None
    ) -> tuple[dict[str, Any], list[Claimed]]:
        """The write, then the claim (which sees the write: the jobs it hands back no
        longer count as running), in a transaction of their own, all in one hop to the
        driver's thread: BEGIN to COMMIT."""
        prepared = _sqlite_statements(db.engine.dialect)
        params = None if claim is None else prepared.claim.params(claim_params(claim))

        def both(connection: sqlite3.Connection) -> tuple[dict[str, Any], list[Claimed]]:
            owned = _write(connection, prepared, worker_id, writes)
            return owned, [] if params is None else _claim(connection, prepared, params)

        return await db.sqlite_write(both)

    async def notify(self, session: Connection) -> None:
        return None  # workers in this process are woken directly; others poll

    async def vacuum_if_needed(
        self, connection: AsyncConnection, *, dead_rows: int, analyze_every_s: float
    ) -> bool:
        return False


class OwnedJob(NamedTuple):
    """A job a write found still held by its worker (SQLite's write path)."""

    id: str
    user_id: str
    workflow_id: str
    callback_url: str | None


@dataclass(frozen=True)
class SqliteStatements:
    """SQLite's hot statements, compiled once per dialect for the driver's thread."""

    owned: Compiled
    steps: Compiled
    states: Compiled
    claim: Compiled


_sqlite_statements = CompiledFor(
    lambda dialect: SqliteStatements(
        owned=Compiled(statements.SQLITE_OWNED, dialect),
        steps=Compiled(statements.upsert_steps("sqlite"), dialect, keys=("job_id", *STEP_FIELDS)),
        states=Compiled(statements.STATE_UPDATE, dialect),
        claim=Compiled(statements.SQLITE_CLAIM, dialect),
    )
)


async def _bare(connection: Connection) -> AsyncConnection:
    """The connection under a session (its transaction), or `connection` itself."""
    if isinstance(connection, AsyncConnection):
        return connection
    return await connection.connection()


def _claim(
    db: sqlite3.Connection, prepared: SqliteStatements, params: tuple[Any, ...]
) -> list[Claimed]:
    return [Claimed(*row) for row in prepared.claim.rows(db.execute(prepared.claim.sql, params))]


def _write(
    db: sqlite3.Connection, prepared: SqliteStatements, worker_id: str, writes: list[JobWrite]
) -> dict[str, Any]:
    ids = orjson.dumps([write.job_id for write in writes]).decode()
    held = db.execute(prepared.owned.sql, prepared.owned.params({"ids": ids, "worker": worker_id}))
    owned = {row[0]: OwnedJob(*row) for row in held.fetchall()}
    mine = [write for write in writes if write.job_id in owned]
    steps = [
        prepared.steps.params({"job_id": write.job_id, **vars(write.step)})
        for write in mine
        if write.step
    ]
    if steps:
        db.executemany(prepared.steps.sql, steps)
    states = [
        prepared.states.params(
            {f"w_{key}": value for key, value in {"id": write.job_id, **vars(write.state)}.items()}
        )
        for write in mine
        if write.state
    ]
    if states:
        db.executemany(prepared.states.sql, states)
    return owned


_BACKENDS: dict[str, Backend] = {"postgresql": PostgresBackend(), "sqlite": SqliteBackend()}


def backend_for(connection: Connection | Database) -> Backend:
    """The back-end of the database `connection` (a session, a connection or a Database)
    talks to."""
    if isinstance(connection, Database):
        dialect = connection.engine.dialect.name
    elif isinstance(connection, AsyncConnection):
        dialect = connection.dialect.name
    else:
        dialect = connection.get_bind().dialect.name
    return _BACKENDS[dialect]


def _per_database(
    cache: weakref.WeakKeyDictionary[Database, T], db: Database, make: Callable[[], T]
) -> T:
    """`cache`'s value for `db`, made on first use and kept no longer than `db`."""
    found = cache.get(db)
    if found is None:
        found = cache[db] = make()
    return found


def claim_params(claim: ClaimRequest) -> dict[str, Any]:
    """The claim statements' parameters."""
    return {
        "now": claim.now,
        "worker": claim.worker_id,
        "until": claim.now + claim.lease,
        "limit": claim.limit,
        "per_user": claim.max_running_per_user,
        "concurrency": claim.concurrency,
        "alive_since": claim.alive_since,
    }


async def _insert_paid(connection: AsyncConnection, job: dict[str, Any], cost: int) -> bool:
    # Prefixed: a parameter named like a users column would join the debit's SET.
    params = {f"job_{name}": value for name, value in job.items()}
    params |= {"debit_user_id": job["user_id"], "debit_amount": cost, "ledger_at": utcnow()}
    inserted = await connection.execute(statements.insert_paid_job(tuple(job)), params)
    return inserted.first() is not None


def _write_documents(worker_id: str, writes: list[JobWrite]) -> dict[str, Any]:
    """A batch of writes as the two JSON documents PostgreSQL's write statements read as
    rows (see `statements`): each job's new state, if any, and each step checkpoint."""
    return {
        "worker": worker_id,
        "writes": _json([_state_row(write) for write in writes]),
        "steps": _json([_step_row(write.job_id, write.step) for write in writes if write.step]),
    }


# Results and outputs travel as JSON text inside the documents, cast to json by
# PostgreSQL: read as nested values, a string holding U+0000 (which a connector's answer
# may) would fail the whole batch, as json_to_recordset unescapes every string it meets.
# The other values are the dataclass's `vars`, shallow (as in `_write`): `asdict` would
# deep-copy each step's output, and looping over `fields()` cost more than the row.
def _state_row(write: JobWrite) -> dict[str, Any]:
    state = write.state
    if state is None:  # a checkpoint alone: the job's own columns stay as they are
        return {"id": write.job_id}
    return {"id": write.job_id, **vars(state), "result": _json(state.result)}


def _step_row(job_id: str, step: StepCheckpoint) -> dict[str, Any]:
    return {"job_id": job_id, **vars(step), "output": _json(step.output)}


def _json(value: Any) -> str | None:
    """JSON text as PostgreSQL reads it; a naive time (there should be none) as UTC."""
    if value is None:
        return None
    return orjson.dumps(value, default=str, option=orjson.OPT_NAIVE_UTC).decode()
