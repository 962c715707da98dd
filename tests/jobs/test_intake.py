"""Intake back-pressure: past a backlog of a few seconds of the workers' drain, new runs
are refused with a Retry-After, the flooding user's first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.intake import IntakeGuard
from levqor.jobs.models import Job, WorkerBeat
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.factories import hook_path, make_workflow, start, webhook_workflow

NOOP = {"id": "a", "connector": "transform"}


def tighten(runtime: Runtime, **limits: Any) -> None:
    runtime.intake = IntakeGuard(runtime.settings.model_copy(update=limits))


async def waiting(runtime: Runtime) -> int:
    async with runtime.db.read() as session:
        return await queue.waiting(session, user_id=None, up_to=10_000)


async def test_a_user_past_their_backlog_gets_429_and_others_still_get_in(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    tighten(runtime, intake_backlog_s=2, intake_min_backlog=3)
    flooder, other = await signup(), await signup()
    hook = hook_path(await webhook_workflow(client, flooder))
    answers = [(await client.post(hook, json={"n": n})) for n in range(5)]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 429, 429]
    refused = answers[-1]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "5"  # no worker is draining: a fixed pause
    # Nothing refused was queued or charged: three runs wait, three credits were taken.
    assert await waiting(runtime) == 3
    me = (await client.get("/api/v1/me", headers=flooder.headers)).json()
    assert me["credits"] == 50 - 3
    # Another user is not held back by the flood, through the API as through a webhook.
    workflow_id = await make_workflow(client, other, NOOP)
    assert (await start(client, other, workflow_id)).status_code == 202
    # So is the flooder, through the API too.
    flooders = await make_workflow(client, flooder, NOOP)
    assert (await start(client, flooder, flooders)).status_code == 429


async def test_everyones_backlog_full_is_a_503_with_retry_after(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    tighten(runtime, intake_backlog_s=2, intake_min_backlog=1)  # everyone: 4 runs
    accounts = [await signup() for _ in range(5)]
    answers = []
    for account in accounts:
        workflow_id = await make_workflow(client, account, NOOP)
        answers.append(await start(client, account, workflow_id))
    assert [answer.status_code for answer in answers] == [202, 202, 202, 202, 503]
    assert answers[-1].json()["code"] == "service_unavailable"
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert await waiting(runtime) == 4


async def test_the_workers_drain_rate_sets_the_backlog_and_the_retry_after(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    # Two live workers finishing half a run a second between them, and a dead fast one.
    async with runtime.db.write() as session, session.begin():
        for worker_id, rate, beat in (("a", 0.25, 0), ("b", 0.25, 0), ("dead", 1000.0, 600)):
            await queue.beat(
                session,
                worker_id=worker_id,
                host="h",
                pid=1,
                concurrency=10,
                now=utcnow() - timedelta(seconds=beat),
                finished_per_s=rate,
            )
    # 12 s of half a run a second: a backlog of 6 runs, above the floor of 2.
    tighten(runtime, intake_backlog_s=12, intake_min_backlog=2)
    account = await signup()
    workflow_id = await make_workflow(client, account, NOOP)
    answers = [await start(client, account, workflow_id) for _ in range(8)]
    assert [answer.status_code for answer in answers].count(202) == 6
    # One run over the backlog: drained in two seconds at half a run a second.
    assert answers[6].status_code == 429
    assert answers[6].headers["Retry-After"] == "2"


async def test_no_backlog_limit_when_turned_off(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    tighten(runtime, intake_backlog_s=0, intake_min_backlog=1)
    account = await signup()
    hook = hook_path(await webhook_workflow(client, account))
    assert {(await client.post(hook, json={})).status_code for _ in range(5)} == {202}


async def test_a_worker_beats_with_how_fast_it_finishes_runs(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, NOOP)
    for _ in range(5):
        assert (await start(client, account, workflow_id)).status_code == 202
    worker = Worker(runtime, concurrency=4)
    await worker.drain()
    await worker.settle()
    await worker._upkeep()  # the beat after the runs finished
    async with runtime.db.read() as session:
        rate = await session.scalar(
            select(WorkerBeat.finished_per_s).where(WorkerBeat.id == worker.worker_id)
        )
        done = await session.scalar(
            select(func.count()).select_from(Job).where(Job.status == "succeeded")
        )
    assert done == 5
    assert rate is not None
    assert rate > 0
    await worker._upkeep()  # nothing finished since: the next beat says so
    async with runtime.db.read() as session:
        rate = await session.scalar(
            select(WorkerBeat.finished_per_s).where(WorkerBeat.id == worker.worker_id)
        )
    assert rate == 0
