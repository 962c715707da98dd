"""The webhook trigger: a secret URL whose JSON body starts a run."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select, update

from levqor.accounts.models import User
from levqor.jobs.models import Job
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import hook_path, webhook_workflow


async def test_a_webhook_call_runs_the_workflow_with_its_body(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    response = await client.post(
        hook_path(workflow), json={"customer": {"email": "ada@example.com"}, "amount": 1200}
    )
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    worker = Worker(runtime, concurrency=2)
    await worker.drain()
    await worker.http.aclose()
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "succeeded"
    assert job["result"] == {"who": "ada@example.com", "cents": 1200}
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["credits"] == 49  # the owner pays for the run


async def test_wrong_token_unknown_workflow_and_non_webhook_look_alike(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    manual = await webhook_workflow(client, account, trigger="manual")
    token = workflow["webhook_url"].rsplit("/", 1)[1]
    answers = [
        await client.post(f"/hooks/{workflow['id']}/not-the-token", json={}),
        await client.post(f"/hooks/wf_doesnotexist/{token}", json={}),
        await client.post(f"/hooks/{manual['id']}/{token}", json={}),
    ]
    bodies = {assert_problem(answer, 404, "not_found")["detail"] for answer in answers}
    assert bodies == {"No such webhook."}


async def test_rotation_retires_the_old_url(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    rotated = await client.post(
        f"/api/v1/workflows/{workflow['id']}/webhook/rotate", headers=account.headers
    )
    assert rotated.json()["webhook_url"] != workflow["webhook_url"]
    assert_problem(await client.post(hook_path(workflow), json={}), 404, "not_found")
    assert (await client.post(hook_path(rotated.json()), json={})).status_code == 202


async def test_empty_body_is_an_empty_input_and_bad_json_is_400(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    assert (await client.post(hook_path(workflow))).status_code == 202
    bad = await client.post(
        hook_path(workflow), content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_problem(bad, 400, "invalid_json")


async def test_deleted_workflow_stops_taking_calls(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    await client.delete(f"/api/v1/workflows/{workflow['id']}", headers=account.headers)
    assert_problem(await client.post(hook_path(workflow), json={}), 404, "not_found")


async def test_a_webhook_without_credits_is_402_and_queues_nothing(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    await set_credits(runtime, account.id, 0)
    response = await client.post(hook_path(workflow), json={"amount": 1})
    assert_problem(response, 402, "insufficient_credits")
    assert await count_jobs(runtime) == 0
    # One credit left, two calls at once: exactly one run is queued and paid for.
    await set_credits(runtime, account.id, 1)
    answers = await asyncio.gather(
        client.post(hook_path(workflow), json={"amount": 1}),
        client.post(hook_path(workflow), json={"amount": 2}),
    )
    assert sorted(answer.status_code for answer in answers) == [202, 402]
    assert await count_jobs(runtime) == 1
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["credits"] == 0


async def set_credits(runtime: Runtime, user_id: str, credits: int) -> None:
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(User).where(User.id == user_id).values(credits=credits))


async def count_jobs(runtime: Runtime) -> int:
    async with runtime.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def test_a_deactivated_owners_webhook_is_404_and_charges_nothing(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(User).where(User.id == account.id).values(is_active=False))
    response = await client.post(hook_path(workflow), json={"amount": 1})
    assert_problem(response, 404, "not_found")
    assert await count_jobs(runtime) == 0
    async with runtime.db.read() as session:
        owner = await session.get(User, account.id)
    assert owner is not None
    assert owner.credits == 50
