"""The write batcher: checkpoints durable when acknowledged, many jobs per commit, nothing
written for a job the worker no longer holds."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from levqor.db.base import utcnow
from levqor.jobs.models import RETRYING, RUNNING, SUCCEEDED, Job, JobStep
from levqor.jobs.queue import JobWrite, StepCheckpoint, retrying, succeeded
from levqor.jobs.writer import JobWriter
from levqor.runtime import Runtime
from tests.factories import claim_as, record_statements, seed


def checkpoint(step_id: str = "first") -> StepCheckpoint:
    now = utcnow()
    return StepCheckpoint(
        step_id=step_id,
        position=0,
        status="succeeded",
        output={"ok": True},
        error=None,
        attempts=1,
        started_at=now,
        finished_at=now,
    )


def step_batches(runtime: Runtime, statements: list[str]) -> int:
    """How many times job_steps were written: statements on PostgreSQL (a batch is one),
    transactions on SQLite (a batch is one executemany, traced once per row)."""
    if not runtime.db.is_sqlite:
        return sum("INSERT INTO job_steps" in statement for statement in statements)
    batches, writing = 0, False
    for statement in statements:
        writing = writing or "INSERT INTO job_steps" in statement
        if statement == "COMMIT" and writing:
            batches, writing = batches + 1, False
    return batches


async def test_writes_submitted_together_commit_in_one_batch(runtime: Runtime) -> None:
    await seed(runtime, users=2, jobs_each=10)
    held = await claim_as(runtime, "w1", 20)
    statements = record_statements(runtime)
    writer = JobWriter(runtime.db, worker_id="w1")
    acknowledged = [writer.submit(JobWrite(job_id, step=checkpoint())) for job_id in held]
    assert writer.unwritten() == set(held)
    assert await asyncio.gather(*acknowledged) == [True] * 20
    assert step_batches(runtime, statements) == 1  # twenty checkpoints, one batch
    assert writer.unwritten() == set()
    async with runtime.db.read() as session:
        stored = (await session.execute(select(JobStep.job_id, JobStep.output))).all()
    assert sorted(stored) == sorted((job_id, {"ok": True}) for job_id in held)


async def test_a_checkpoint_is_stored_when_it_is_acknowledged(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=1)
    [job_id] = await claim_as(runtime, "w1", 1)
    writer = JobWriter(runtime.db, worker_id="w1")
    assert await writer.write(JobWrite(job_id, step=checkpoint("a"))) is True
    async with runtime.db.read() as session:  # another connection sees it at once
        step = await session.scalar(select(JobStep).where(JobStep.job_id == job_id))
        job = await session.get(Job, job_id)
    assert step is not None
    assert (step.step_id, step.status, step.output) == ("a", "succeeded", {"ok": True})
    assert job is not None
    assert (job.status, job.lease_owner) == (RUNNING, "w1")  # a checkpoint keeps the job


async def test_what_a_batch_writes_reads_back_the_same_through_the_orm(runtime: Runtime) -> None:
    """The write path runs its own SQL (on SQLite, on the driver's thread); what it stores
    must read back exactly as the ORM would have written it: aware UTC times to the
    microsecond, JSON with its nesting and unicode, NULLs."""
    await seed(runtime, users=1, jobs_each=1)
    [job_id] = await claim_as(runtime, "w1", 1)
    started = datetime(2026, 3, 29, 1, 59, 58, 123456, tzinfo=UTC)
    ended = datetime(2026, 3, 29, 3, 0, 1, 654321, tzinfo=timezone(timedelta(hours=2)))
    output = {"a": [1, 2.5, None, True], "ü": {"nested": "é✓"}, "n": 10**15}
    step = replace(checkpoint(), output=output, started_at=started, finished_at=ended, attempts=3)
    writer = JobWriter(runtime.db, worker_id="w1")
    assert await writer.write(JobWrite(job_id, step=step, state=succeeded(output, ended)))
    async with runtime.db.read() as session:
        stored = await session.scalar(select(JobStep).where(JobStep.job_id == job_id))
        job = await session.get(Job, job_id)
    assert stored is not None
    assert job is not None
    assert (stored.output, stored.error, stored.attempts) == (output, None, 3)
    assert (stored.started_at, stored.finished_at) == (started, ended)
    assert stored.started_at is not None
    assert stored.started_at.tzinfo == UTC
    assert (job.status, job.result, job.finished_at, job.lease_owner) == (
        SUCCEEDED,
        output,
        ended,
        None,
    )


async def test_text_and_string_outputs_read_back_unchanged(runtime: Runtime) -> None:
    """Errors and outputs travel to PostgreSQL inside a JSON document: quotes,
    backslashes, newlines, tabs and unicode must come back as they went, and a step whose
    output is a bare string or null must keep it; a retry's new run time lands too."""
    await seed(runtime, users=1, jobs_each=2)
    first, second = await claim_as(runtime, "w1", 2)
    error = 'He said "no" \\ C:\\path\n\tnext line, café ✓ \u2028 end'
    later = datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    failing = replace(checkpoint(), status="failed", output=None, error=error)
    text_output = replace(checkpoint(), output='a "string" output\n')
    writer = JobWriter(runtime.db, worker_id="w1")
    written = await asyncio.gather(
        writer.submit(JobWrite(first, step=failing, state=retrying(later, error))),
        writer.submit(JobWrite(second, step=text_output, state=succeeded("done", utcnow()))),
    )
    assert list(written) == [True, True]
    async with runtime.db.read() as session:
        steps = {step.job_id: step for step in await session.scalars(select(JobStep))}
        jobs = {job.id: job for job in await session.scalars(select(Job))}
    assert (steps[first].status, steps[first].output, steps[first].error) == (
        "failed",
        None,
        error,
    )
    assert (jobs[first].status, jobs[first].error, jobs[first].run_at) == (
        RETRYING,
        error,
        later,
    )
    assert steps[second].output == 'a "string" output\n'
    assert (jobs[second].status, jobs[second].result) == (SUCCEEDED, "done")


async def test_an_output_holding_a_nul_character_is_stored_with_the_rest_of_its_batch(
    runtime: Runtime,
) -> None:
    """A connector's answer may hold U+0000 inside a string: its run's write must not fail,
    nor take the other runs of its batch down with it."""
    await seed(runtime, users=1, jobs_each=2)
    first, second = await claim_as(runtime, "w1", 2)
    odd = {"body": "before\x00after"}
    writer = JobWriter(runtime.db, worker_id="w1")
    written = await asyncio.gather(
        writer.submit(JobWrite(first, step=replace(checkpoint(), output=odd))),
        writer.submit(JobWrite(second, step=checkpoint(), state=succeeded(odd, utcnow()))),
    )
    assert list(written) == [True, True]
    async with runtime.db.read() as session:
        steps = {step.job_id: step for step in await session.scalars(select(JobStep))}
        job = await session.get(Job, second)
    assert steps[first].output == odd
    assert job is not None
    assert (job.status, job.result) == (SUCCEEDED, odd)


async def test_a_write_for_a_job_held_by_another_worker_writes_nothing(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=1)
    [job_id] = await claim_as(runtime, "w1", 1)
    intruder = JobWriter(runtime.db, worker_id="w2")
    done = JobWrite(job_id, step=checkpoint(), state=succeeded({"n": 1}, utcnow()))
    assert await intruder.write(done) is False
    async with runtime.db.read() as session:
        job = await session.get(Job, job_id)
        steps = (await session.scalars(select(JobStep))).all()
    assert job is not None
    assert (job.status, job.lease_owner, job.result) == (RUNNING, "w1", None)
    assert steps == []


async def test_a_final_state_hands_the_job_back_then_frees_the_slot(runtime: Runtime) -> None:
    await seed(runtime, users=1, jobs_each=2)
    first, second = await claim_as(runtime, "w1", 2)
    released: list[set[str]] = []
    writer = JobWriter(runtime.db, worker_id="w1")
    writer.on_release = lambda: released.append(writer.unwritten())
    now = utcnow()
    checkpointed = writer.submit(JobWrite(second, step=checkpoint()))
    finished = writer.submit(JobWrite(first, state=succeeded({"n": 1}, now)))
    assert list(await asyncio.gather(checkpointed, finished)) == [True, True]
    assert len(released) == 1  # told once, after the final state committed
    async with runtime.db.read() as session:
        jobs = {job.id: job for job in await session.scalars(select(Job))}
    assert (jobs[first].status, jobs[first].result, jobs[first].lease_owner) == (
        SUCCEEDED,
        {"n": 1},
        None,
    )
    assert (jobs[second].status, jobs[second].lease_owner) == (RUNNING, "w1")
