"""Poison jobs: a job that crashes its worker fails into the dead letters after a few
tries, values that cannot be stored are refused at the door or made storable, and one
job's bad write never fails another's."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select, update

from levqor.db.base import utcnow
from levqor.jobs.models import Job, JobStep
from levqor.jobs.queue import JobWrite, StepCheckpoint, succeeded
from levqor.jobs.worker import Worker
from levqor.jobs.writer import JobWriter
from levqor.runtime import Runtime
from levqor.workflows.models import WorkflowVersion
from tests.conftest import assert_problem, serve_app
from tests.factories import job, make_workflow, post_to, start

TRANSFORM = {"id": "a", "connector": "transform", "params": {"n": "{{ input.n }}"}}


async def test_a_job_that_crashes_its_worker_fails_after_the_limit(
    client: httpx.AsyncClient, signup: Any, make_settings: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, TRANSFORM)
    job_id = (await start(client, account, workflow_id, {"n": 1})).json()["job_id"]
    # A version that no longer loads (stored by an older release, say): every attempt
    # crashes before any step runs.
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(WorkflowVersion).values(definition={"steps": "oops"}))
    async with serve_app(make_settings(job_max_crashes=2)) as (_, limited):
        worker = Worker(limited, concurrency=2)
        for _ in range(2):  # the retry may come within this drain, or need the next
            await worker.drain()
            seen = await job(client, account, job_id)
            if seen["status"] == "failed":
                break
            assert seen["status"] == "retrying"
            assert seen["error"] == "internal error: ValidationError (1 of 2 times)"
            async with limited.db.write() as session, session.begin():  # due now
                await session.execute(update(Job).values(run_at=utcnow()))
        worker.executor.close()
        await worker.http.aclose()
    final = await job(client, account, job_id)
    assert final["status"] == "failed"
    assert final["error"] == "internal error: ValidationError (2 times; given up)"
    dead = (await client.get("/api/v1/dead-letters", headers=account.headers)).json()["data"]
    assert [entry["job_id"] for entry in dead] == [job_id]


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{"input": {"id": 123456789012345678901234567890}}', "$.id"),
        (b'{"input": {"amount": NaN}}', "$.amount"),
        (b'{"input": {"ratio": [1, Infinity]}}', "$.ratio[1]"),
    ],
)
async def test_numbers_that_cannot_be_stored_are_a_422_at_intake(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, raw: bytes, where: str
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, TRANSFORM)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/runs",
        content=raw,
        headers={**account.headers, "Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "invalid_request")
    assert where in response.text, body
    async with runtime.db.read() as session:
        assert await session.scalar(select(Job)) is None


async def test_a_huge_integer_from_a_service_is_stored_as_text(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any
) -> None:
    account = await signup()
    http_peer.default = (200, {"id": 2**70, "small": 7}, {})
    workflow_id = await make_workflow(
        client,
        account,
        post_to(http_peer, "/lookup", id="lookup"),
        {
            "id": "use",
            "connector": "transform",
            "params": {"id": "{{ steps.lookup.output.body.id }}"},
        },
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    worker = Worker(runtime, concurrency=2)
    await worker.drain()
    await worker.http.aclose()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded", detail
    assert detail["steps"][0]["output"]["body"] == {"id": str(2**70), "small": 7}
    assert detail["result"] == {"id": str(2**70)}


async def test_one_bad_write_does_not_fail_the_others_in_its_batch(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, TRANSFORM)
    good, bad = [
        (await start(client, account, workflow_id, {"n": n})).json()["job_id"] for n in (1, 2)
    ]
    async with runtime.db.write() as session, session.begin():
        await session.execute(
            update(Job).values(status="running", lease_owner="w", lease_expires_at=utcnow())
        )
    writer = JobWriter(runtime.db, worker_id="w")
    now = utcnow()
    broken_step = StepCheckpoint(
        step_id="a",
        position=0,
        status=cast(str, None),  # NOT NULL in the table: this write fails
        output=None,
        error=None,
        attempts=1,
        started_at=now,
        finished_at=now,
    )
    written = [
        writer.submit(JobWrite(good, state=succeeded({"n": 1}, now))),
        writer.submit(JobWrite(bad, step=broken_step, state=succeeded({"n": 2}, now))),
    ]
    outcomes = await asyncio.gather(*written, return_exceptions=True)
    assert outcomes[0] is True
    assert isinstance(outcomes[1], Exception)
    assert (await job(client, account, good))["status"] == "succeeded"
    assert (await job(client, account, bad))["status"] == "running"
    async with runtime.db.read() as session:
        assert await session.scalar(select(JobStep)) is None
