"""Claiming under contention: each job to exactly one worker; per-user fairness."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from levqor.accounts.models import User
from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.models import RUNNING, Job
from levqor.runtime import Runtime
from levqor.workflows.models import Workflow, WorkflowVersion

LEASE = timedelta(seconds=30)


async def seed(runtime: Runtime, *, users: int, jobs_each: int, tag: str = "q") -> None:
    async with runtime.db.write() as session, session.begin():
        for index in range(users):
            user = User(email=f"{tag}{index}@example.com", password_hash="x", credits=0)
            session.add(user)
            await session.flush()
            workflow = Workflow(
                user_id=user.id,
                name="w",
                current_version=1,
                trigger_type="manual",
                webhook_token_hash="h",
                webhook_token_encrypted="e",
            )
            session.add(workflow)
            await session.flush()
            session.add(WorkflowVersion(workflow_id=workflow.id, version=1, definition={}))
            session.add_all(
                Job(user_id=user.id, workflow_id=workflow.id, workflow_version=1, input={})
                for _ in range(jobs_each)
            )


async def claim_as(runtime: Runtime, worker: str, limit: int, per_user: int = 1000) -> list[str]:
    async with runtime.db.session(write=True) as session, session.begin():
        claimed = await queue.claim(
            session,
            worker_id=worker,
            limit=limit,
            lease=LEASE,
            now=utcnow(),
            max_running_per_user=per_user,
        )
    return [job.id for job in claimed]


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
    # The backlog fills this round's candidates, but only up to that user's limit ...
    assert len(await claim_as(runtime, "w1", 10, per_user=3)) == 3
    # ... and from the next round on that user is left out, so the newcomer runs.
    assert len(await claim_as(runtime, "w2", 10, per_user=3)) == 3
    assert await running_per_user(runtime) == [3, 3]
