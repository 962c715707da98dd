"""The write batcher: checkpoints durable when acknowledged, many jobs per commit, nothing
written for a job the worker no longer holds."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, select

from levqor.db.base import utcnow
from levqor.jobs.models import RUNNING, SUCCEEDED, Job, JobStep
from levqor.jobs.queue import JobWrite, StepCheckpoint, succeeded
from levqor.jobs.writer import JobWriter
from levqor.runtime import Runtime
from tests.factories import claim_as, seed


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


def count_step_writes(runtime: Runtime) -> list[int]:
    """One entry per statement that writes job_steps (a batch is one, on either back-end)."""
    writes: list[int] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO job_steps" in statement:
            writes.append(1)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    return writes


async def test_writes_submitted_together_commit_in_one_batch(runtime: Runtime) -> None:
    await seed(runtime, users=2, jobs_each=10)
    held = await claim_as(runtime, "w1", 20)
    writes = count_step_writes(runtime)
    writer = JobWriter(runtime.db, worker_id="w1")
    acknowledged = [writer.submit(JobWrite(job_id, step=checkpoint())) for job_id in held]
    assert writer.unwritten() == set(held)
    assert await asyncio.gather(*acknowledged) == [True] * 20
    assert writes == [1]  # twenty checkpoints, one statement
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
