"""New runs queued at once are committed together (on SQLite in one transaction, see
`queue/batching.py`; on PostgreSQL each is one statement): every one is charged exactly
once, in order, and one that cannot be queued never costs the others theirs."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from levqor.accounts.models import User
from levqor.billing.models import CreditEntry
from levqor.jobs import queue
from levqor.jobs.models import Job
from levqor.jobs.service import new_job
from levqor.runtime import Runtime
from levqor.workflows.models import Workflow
from tests.factories import user_with_workflow


async def account(runtime: Runtime, name: str, credits: int) -> tuple[str, Workflow]:
    async with runtime.db.write() as session, session.begin():
        user, workflow = await user_with_workflow(session, name=name, credits=credits)
    return user.id, workflow


async def enqueue_many(runtime: Runtime, jobs: list[dict[str, Any]], cost: int) -> list[bool]:
    return list(await asyncio.gather(*(queue.enqueue(runtime.db, job, cost=cost) for job in jobs)))


async def test_runs_queued_together_are_each_charged_once_in_order(runtime: Runtime) -> None:
    user_id, workflow = await account(runtime, "many", credits=1_000)
    jobs = [new_job(user_id=user_id, workflow=workflow, input={"n": n}) for n in range(60)]
    assert await enqueue_many(runtime, jobs, cost=3) == [True] * 60
    async with runtime.db.read() as session:
        credits = await session.scalar(select(User.credits).where(User.id == user_id))
        queued = await session.scalar(select(func.count()).select_from(Job))
        balances = list(
            await session.scalars(select(CreditEntry.balance_after).order_by(CreditEntry.id))
        )
    assert credits == 1_000 - 60 * 3
    assert queued == 60
    assert balances == [1_000 - 3 * n for n in range(1, 61)]  # one entry per run, in order


async def test_a_user_short_of_credits_gets_what_fits_and_others_are_untouched(
    runtime: Runtime,
) -> None:
    short_id, short_flow = await account(runtime, "short", credits=7)
    rich_id, rich_flow = await account(runtime, "rich", credits=100)
    jobs = [
        new_job(user_id=uid, workflow=flow, input={})
        for _ in range(5)
        for uid, flow in ((short_id, short_flow), (rich_id, rich_flow))
    ]
    answers = await enqueue_many(runtime, jobs, cost=2)
    # Three of the short user's runs fit in 7 credits (on SQLite the first three: they
    # commit together, in order); the rich user's five all do.
    assert sorted(answers[0:10:2], reverse=True) == [True, True, True, False, False]
    if runtime.db.is_sqlite:
        assert answers[0:10:2] == [True, True, True, False, False]
    assert answers[1:10:2] == [True] * 5
    async with runtime.db.read() as session:
        credits = dict((await session.execute(select(User.id, User.credits))).all())
        queued = dict(
            (await session.execute(select(Job.user_id, func.count()).group_by(Job.user_id))).all()
        )
    assert credits == {short_id: 1, rich_id: 90}
    assert queued == {short_id: 3, rich_id: 5}


async def test_a_run_that_cannot_be_inserted_fails_alone(runtime: Runtime) -> None:
    user_id, workflow = await account(runtime, "one", credits=100)
    good = [new_job(user_id=user_id, workflow=workflow, input={}) for _ in range(4)]
    bad = {**new_job(user_id=user_id, workflow=workflow, input={}), "workflow_id": "wf_gone"}
    results = await asyncio.gather(
        *(queue.enqueue(runtime.db, job, cost=1) for job in [*good[:2], bad, *good[2:]]),
        return_exceptions=True,
    )
    assert [result is True for result in results] == [True, True, False, True, True]
    assert isinstance(results[2], Exception)
    async with runtime.db.read() as session:
        credits = await session.scalar(select(User.credits).where(User.id == user_id))
        queued = await session.scalar(select(func.count()).select_from(Job))
    assert (credits, queued) == (96, 4)  # the failed run was not charged
