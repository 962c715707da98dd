"""Claiming under contention: each job to exactly one worker; per-user fairness."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import DBAPIError

from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.models import CANCELLED, FAILED, RUNNING, RUNNING_SQL, WAITING_SQL, Job, JobStep
from levqor.jobs.queue import statements
from levqor.runtime import Runtime
from levqor.workflows.models import Workflow
from tests.factories import LEASE, claim_as, seed


async def running_per_user(runtime: Runtime) -> list[int]:
    async with runtime.db.read() as session:
        rows = await session.execute(
            select(Job.user_id, func.count()).where(Job.status == RUNNING).group_by(Job.user_id)
        )
    return sorted(count for _, count in rows)


async def test_concurrent_claimers_hand_out_every_job_exactly_once(runtime: Runtime) -> None:
    await seed(runtime, users=4, jobs_each=25)
    claimed: list[str] = []
    for _ in range(50):
        batches = await asyncio.gather(*[claim_as(runtime, f"w{i}", 10) for i in range(6)])
        claimed += [job_id for batch in batches for job_id in batch]
        if len(claimed) >= 100:
            break
    assert len(claimed) == 100
    assert Counter(claimed).most_common(1)[0][1] == 1  # nobody got a job twice


async def test_a_batch_respects_the_per_user_limit(runtime: Runtime) -> None:
    await seed(runtime, users=3, jobs_each=10)
    assert len(await claim_as(runtime, "w1", 100, per_user=2)) == 6
    assert await claim_as(runtime, "w2", 100, per_user=2) == []  # everyone is at the limit
    assert await running_per_user(runtime) == [2, 2, 2]


async def test_one_users_backlog_does_not_starve_the_others(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=200, tag="busy")  # older: first in line
    await seed(runtime, users=1, jobs_each=5, tag="late")
    # The backlog runs only up to that user's limit, and the newcomer runs too, in the
    # same claim: each user's runs are reached directly, not through the backlog.
    assert len(await claim_as(runtime, "w1", 10, per_user=3)) == 6
    assert await claim_as(runtime, "w2", 10, per_user=3) == []
    assert await running_per_user(runtime) == [3, 3]


async def beat_as(runtime: Runtime, worker: str, concurrency: int, at: datetime) -> None:
    async with runtime.db.session(write=True) as session, session.begin():
        await queue.beat(
            session, worker_id=worker, host="h", pid=1, concurrency=concurrency, now=at
        )


async def test_one_user_never_takes_every_slot_of_a_lone_worker(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=20, tag="busy")
    await seed(runtime, users=1, jobs_each=1, tag="late")
    # A worker of 4 slots, alone: the busy user gets 3 even though the setting allows 10,
    assert len(await claim_as(runtime, "w1", 3, per_user=10, concurrency=4)) == 3
    # and the last slot goes to the other user.
    assert len(await claim_as(runtime, "w1", 1, per_user=10, concurrency=4)) == 1
    assert await running_per_user(runtime) == [1, 3]


async def test_the_fleets_slots_bound_one_user_not_one_workers(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=30)
    await beat_as(runtime, "w1", 10, utcnow())
    await beat_as(runtime, "w2", 10, utcnow())
    await beat_as(runtime, "dead", 100, utcnow() - timedelta(minutes=5))  # not counted
    # Two live workers of 10: one user may hold 19 slots, more than one worker has.
    assert len(await claim_as(runtime, "w1", 10, per_user=1000, concurrency=10)) == 10
    assert len(await claim_as(runtime, "w2", 10, per_user=1000, concurrency=10)) == 9
    assert await running_per_user(runtime) == [19]
    # The setting still binds when it is lower.
    await seed(runtime, users=1, jobs_each=30, tag="second")
    assert len(await claim_as(runtime, "w1", 10, per_user=5, concurrency=10)) == 5


async def test_a_batch_of_writes_keeps_only_the_jobs_still_held(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=3)
    held, cancelled, taken_over = await claim_as(runtime, "w1", 3)
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).where(Job.id == cancelled).values(status=CANCELLED))
        await session.execute(update(Job).where(Job.id == taken_over).values(lease_owner="w2"))
    now = utcnow()
    step = queue.StepCheckpoint(
        step_id="only",
        position=0,
        status="succeeded",
        output={"n": 1, "text": "café"},
        error=None,
        attempts=1,
        started_at=now,
        finished_at=now,
    )
    writes = [
        queue.JobWrite(job_id, step=step, state=queue.succeeded({"n": 1}, now))
        for job_id in (held, cancelled, taken_over)
    ]
    async with runtime.db.transaction() as connection:
        kept = await queue.write_batch(connection, worker_id="w1", writes=writes)
    assert kept == {held}
    async with runtime.db.read() as session:
        jobs = {job.id: job for job in await session.scalars(select(Job))}
        steps = (await session.execute(select(JobStep.job_id, JobStep.output))).all()
    assert (jobs[held].status, jobs[held].result, jobs[held].lease_owner) == (
        "succeeded",
        {"n": 1},
        None,
    )
    assert jobs[cancelled].status == CANCELLED
    assert (jobs[taken_over].status, jobs[taken_over].lease_owner) == (RUNNING, "w2")
    assert steps == [(held, {"n": 1, "text": "café"})]


async def test_a_checkpoint_alone_leaves_the_job_running(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=1)
    [job_id] = await claim_as(runtime, "w1", 1)
    now = utcnow()
    step = queue.StepCheckpoint(
        step_id="first",
        position=0,
        status="succeeded",
        output=None,
        error=None,
        attempts=1,
        started_at=now,
        finished_at=now,
    )
    async with runtime.db.transaction() as connection:
        kept = await queue.write_batch(
            connection, worker_id="w1", writes=[queue.JobWrite(job_id, step=step)]
        )
    assert kept == {job_id}
    async with runtime.db.read() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    assert (job.status, job.lease_owner) == (RUNNING, "w1")


async def test_a_dead_workers_jobs_are_requeued_once_the_lease_runs_out(
    runtime: Runtime,
) -> None:
    await seed(runtime, users=1, jobs_each=2)
    await claim_as(runtime, "dead", 2)
    async with runtime.db.transaction() as connection:
        assert await recover(connection, now=utcnow()) == 0  # leases still good
        assert await recover(connection, now=utcnow() + LEASE * 2) == 2
    assert len(await claim_as(runtime, "survivor", 10)) == 2


async def recover(connection: queue.Connection, *, now: datetime, max_crashes: int = 5) -> int:
    return await queue.recover_lost(
        connection, now=now, silent_since=now - LEASE, max_crashes=max_crashes
    )


async def test_a_job_lost_again_and_again_fails_into_the_dead_letters(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=1)
    for lost in range(1, 4):
        assert len(await claim_as(runtime, f"dies-{lost}", 1)) == 1
        async with runtime.db.transaction() as connection:
            assert await recover(connection, now=utcnow() + LEASE * 2, max_crashes=3) == 1
        async with runtime.db.read() as session:
            job = await session.scalar(select(Job))
        assert job is not None
        assert job.crashes == lost
    assert job is not None
    assert (job.status, job.lease_owner) == (FAILED, None)
    assert job.error == "its worker stopped while running it (3 times; given up)"
    assert job.finished_at is not None
    assert await claim_as(runtime, "survivor", 10) == []


async def test_the_jobs_table_is_vacuumed_when_autovacuum_is_off(runtime: Runtime) -> None:
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only")
    async with runtime.db.read_engine.connect() as connection:
        autovacuum = await connection.scalar(text("SELECT current_setting('autovacuum')"))
        before = await connection.scalar(
            text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'")
        )
        await queue.vacuum_if_needed(connection, dead_rows=0)
    if autovacuum == "off":  # with autovacuum on, the server vacuums
        async with runtime.db.read_engine.connect() as connection:
            await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            after = await connection.scalar(
                text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'")
            )
        assert after == before + 1


async def test_a_table_analyzed_empty_is_analyzed_again_once_refilled(runtime: Runtime) -> None:
    """Plans cached while the table looked empty scan it whole; fresh statistics (and
    the plan invalidation an analyze brings) must follow a refill quickly."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only")
    async with runtime.db.read_engine.connect() as connection:
        await connection.execute(text("ANALYZE jobs"))  # empty: reltuples 0
    await _add_jobs(runtime, 300)
    executed: list[str] = []
    event.listen(
        runtime.db.read_engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, sql, *_: executed.append(sql),
    )
    async with runtime.db.read_engine.connect() as connection:
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        analyzed = await queue.vacuum_if_needed(connection)
        estimate = await connection.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass")
        )
        sampled = set(
            await connection.scalars(text("SELECT attname FROM pg_stats WHERE tablename = 'jobs'"))
        )
    assert analyzed
    assert estimate == 300
    assert {"status", "user_id", "run_at", "priority"} <= sampled
    # the columns plans read, not the wide ones (their sampling was most of the cost)
    (analyze,) = [sql for sql in executed if "ANALYZE" in sql]
    assert "status" in analyze
    assert not {"input", "result", "error"} & set(analyze.replace(",", " ").split())


async def test_runs_changing_state_bring_an_analyze_at_most_once_a_minute(
    runtime: Runtime,
) -> None:
    """A burn-down changes every row twice and leaves their number as it is, so the
    planner's estimate holds: the analyze waits for its minute. Checked every half
    second against each tenth changed, it ran about 35 times per 20,000 runs."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only")
    await _add_jobs(runtime, 300)
    async with runtime.db.read_engine.connect() as connection:
        await connection.execute(text("ANALYZE jobs"))
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).values(status="running"))
        await session.execute(text("SELECT pg_stat_force_next_flush()"))  # at commit
    async with runtime.db.read_engine.connect() as connection:
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        assert not await queue.vacuum_if_needed(connection)
        assert await queue.vacuum_if_needed(connection, analyze_every_s=0)  # its minute, up


async def test_an_upkeep_cancelled_mid_statement_ends_as_cancelled_and_frees_its_lock(
    runtime: Runtime,
) -> None:
    """A worker told to stop while its analyze runs: the cancellation goes through (it
    was replaced by an error from unlocking on the connection the cancellation had
    closed, logged as a failed vacuum at every such stop), and the next worker can take
    the upkeep's lock."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only")
    await _add_jobs(runtime, 60)  # an analyze is due
    async with runtime.db.read_engine.connect() as blocker:
        await blocker.execute(text("BEGIN"))
        await blocker.execute(text("LOCK TABLE jobs IN SHARE UPDATE EXCLUSIVE MODE"))
        upkeep = asyncio.create_task(_upkeep_on_its_own_connection(runtime))
        async with asyncio.timeout(10):
            while not await _upkeep_waits_for_a_lock(runtime):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        upkeep.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upkeep
        await blocker.execute(text("ROLLBACK"))
    async with runtime.db.read_engine.connect() as connection:
        assert await connection.scalar(
            text("SELECT pg_try_advisory_lock(hashtext('levqor_vacuum_jobs'))")
        )
        await connection.execute(text("SELECT pg_advisory_unlock(hashtext('levqor_vacuum_jobs'))"))


async def _add_jobs(runtime: Runtime, count: int) -> None:
    """`count` new jobs of a new user, counted in the table's statistics at once."""
    await seed(runtime, users=1, jobs_each=0, tag="added")
    async with runtime.db.write() as session, session.begin():
        workflow = await session.scalar(select(Workflow))
        assert workflow is not None
        session.add_all(
            Job(user_id=workflow.user_id, workflow_id=workflow.id, workflow_version=1, input={})
            for _ in range(count)
        )
        await session.execute(text("SELECT pg_stat_force_next_flush()"))  # at commit


async def _upkeep_on_its_own_connection(runtime: Runtime) -> bool:
    async with runtime.db.read_engine.connect() as connection:
        return await queue.vacuum_if_needed(connection)


async def _upkeep_waits_for_a_lock(runtime: Runtime) -> bool:
    async with runtime.db.read_engine.connect() as connection:
        return bool(
            await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND (query LIKE 'ANALYZE jobs%' OR query LIKE 'VACUUM%jobs%')"
                )
            )
        )


async def test_a_silent_workers_jobs_are_requeued_before_their_lease_runs_out(
    runtime: Runtime,
) -> None:
    await seed(runtime, users=1, jobs_each=3)
    now = utcnow()
    async with runtime.db.transaction() as connection:
        for worker, beat_at in (("silent", now - timedelta(seconds=6)), ("alive", now)):
            await queue.beat(
                connection, worker_id=worker, host="h", pid=1, concurrency=2, now=beat_at
            )
    await claim_as(runtime, "silent", 2)
    await claim_as(runtime, "alive", 1)
    silent_since = now - timedelta(seconds=5)
    async with runtime.db.transaction() as connection:
        recovered = await queue.recover_lost(
            connection, now=utcnow(), silent_since=silent_since, max_crashes=5
        )
    assert recovered == 2  # the silent worker's two; the live one keeps its job
    async with runtime.db.read() as session:
        owners = Counter(job.lease_owner for job in await session.scalars(select(Job)))
    assert owners == {None: 2, "alive": 1}


async def test_a_dead_workers_jobs_keep_counting_against_the_user_until_requeued(
    runtime: Runtime,
) -> None:
    """The per-user limit holds while a dead worker's jobs wait for recovery: they count
    even once their leases ran out, so the user never runs more than the limit."""
    await seed(runtime, users=1, jobs_each=6)
    assert len(await claim_as(runtime, "dead", 10, per_user=3)) == 3
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).values(lease_expires_at=utcnow() - LEASE))
    assert await claim_as(runtime, "next", 10, per_user=3) == []
    async with runtime.db.transaction() as connection:
        assert await recover(connection, now=utcnow()) == 3
    assert len(await claim_as(runtime, "next", 10, per_user=3)) == 3
    assert await running_per_user(runtime) == [3]


@pytest.mark.parametrize("claim", [statements.POSTGRES_CLAIM, statements.SQLITE_CLAIM])
def test_the_claims_name_the_partial_indexes_predicates(claim: Any) -> None:
    # The planners use ix_jobs_user_waiting and ix_jobs_running only for queries that
    # spell their predicates the same way.
    assert WAITING_SQL in str(claim)
    assert RUNNING_SQL in str(claim)


def finished(job_id: str, now: datetime) -> queue.JobWrite:
    step = queue.StepCheckpoint(
        step_id="only",
        position=0,
        status="succeeded",
        output={"done": job_id},
        error=None,
        attempts=1,
        started_at=now,
        finished_at=now,
    )
    return queue.JobWrite(job_id, step=step, state=queue.succeeded({"done": job_id}, now))


async def write_and_claim_as(
    runtime: Runtime, worker: str, writes: list[queue.JobWrite], limit: int, per_user: int
) -> tuple[set[str], list[str]]:
    now = utcnow()
    claim = queue.ClaimRequest(
        worker_id=worker,
        limit=limit,
        lease=LEASE,
        now=now,
        max_running_per_user=per_user,
        concurrency=per_user + 1,
        alive_since=now,
    )
    owned, claimed = await queue.write_and_claim(
        runtime.db, worker_id=worker, writes=writes, claim=claim
    )
    return owned, [job.id for job in claimed]


async def test_a_write_carries_the_next_claim_in_one_statement(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=6)
    first = await claim_as(runtime, "w1", 2, per_user=2)
    now = utcnow()
    # The user is at their limit of 2; both running jobs finish in this very write, so
    # the claim riding along may take 2 more (on PostgreSQL its snapshot still shows
    # them running: the statement adds them back).
    owned, claimed = await write_and_claim_as(
        runtime, "w1", [finished(job_id, now) for job_id in first], limit=5, per_user=2
    )
    assert owned == set(first)
    assert len(claimed) == 2
    assert not set(claimed) & set(first)
    async with runtime.db.read() as session:
        jobs = {job.id: job for job in await session.scalars(select(Job))}
        rows = (await session.execute(select(JobStep.job_id, JobStep.output))).all()
    steps: dict[str, Any] = {job_id: output for job_id, output in rows}
    assert {job_id: jobs[job_id].status for job_id in first} == dict.fromkeys(first, "succeeded")
    assert {job_id: jobs[job_id].result for job_id in first} == {
        job_id: {"done": job_id} for job_id in first
    }
    assert steps == {job_id: {"done": job_id} for job_id in first}
    assert {(jobs[job_id].status, jobs[job_id].lease_owner) for job_id in claimed} == {
        (RUNNING, "w1")
    }
    assert await running_per_user(runtime) == [2]


async def test_a_checkpoint_carrying_a_claim_keeps_its_jobs_slot(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=5)
    [job_id] = await claim_as(runtime, "w1", 1, per_user=2)
    now = utcnow()
    checkpoint = queue.JobWrite(job_id, step=finished(job_id, now).step)
    stolen = finished("job_not_mine", now)
    owned, claimed = await write_and_claim_as(
        runtime, "w1", [checkpoint, stolen], limit=5, per_user=2
    )
    # The job goes on running, so only one more fits under the limit of 2; a write for a
    # job this worker does not hold changes nothing.
    assert owned == {job_id}
    assert len(claimed) == 1
    assert await running_per_user(runtime) == [2]


async def test_a_failed_write_claims_nothing(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=3)
    [job_id] = await claim_as(runtime, "w1", 1)
    now = utcnow()
    step = finished(job_id, now).step
    assert step is not None
    bad = queue.JobWrite(job_id, step=replace(step, step_id=None))  # type: ignore[arg-type]
    with pytest.raises(DBAPIError):
        await write_and_claim_as(runtime, "w1", [bad], limit=2, per_user=10)
    # The statement failed whole: the job is still running and nothing else was claimed.
    assert await running_per_user(runtime) == [1]


async def test_a_run_stored_before_the_checks_at_the_door_is_claimed_with_its_input_whole(
    runtime: Runtime,
) -> None:
    """The door refuses integers past 64 bits now; older rows may hold them, and they
    must read back exact (orjson, faster, would turn them into floats)."""
    await seed(runtime, users=1, jobs_each=1)
    stored = '{"amount": 1267650600228229401496703205377, "note": "2**100 + 1"}'
    update_input = (
        "UPDATE jobs SET input = :stored"
        if runtime.db.is_sqlite
        else "UPDATE jobs SET input = CAST(:stored AS json)"
    )
    async with runtime.db.write() as session, session.begin():
        await session.execute(text(update_input), {"stored": stored})
    now = utcnow()
    async with runtime.db.session(write=True) as session, session.begin():
        [job] = await queue.claim(
            session, worker_id="w1", limit=1, lease=LEASE, now=now, max_running_per_user=10
        )
    assert job.input == {"amount": 2**100 + 1, "note": "2**100 + 1"}
