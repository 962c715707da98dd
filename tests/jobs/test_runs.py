"""Runs end to end: queued through the API, executed by a real worker, against a real
local HTTP server. What a user sees: statuses, outputs, attempts, credits, requests."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.models import Job
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import job, make_workflow, post_to, start


@pytest.fixture
async def worker(runtime: Runtime) -> Any:
    built = Worker(runtime, concurrency=4)
    yield built
    await built.http.aclose()


async def test_steps_pass_outputs_along(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    http_peer.default = (200, {"received": True}, {})
    workflow_id = await make_workflow(
        client,
        account,
        {
            "id": "shape",
            "connector": "transform",
            "params": {"greeting": "Hi {{ input.name }}", "amount": "{{ input.amount }}"},
        },
        {
            "id": "big",
            "connector": "filter",
            "params": {"condition": "{{ steps.shape.output.amount > 10 }}"},
        },
        post_to(
            http_peer,
            "/hook",
            params={
                "json": {
                    "text": "{{ steps.shape.output.greeting }}",
                    "amount": "{{ input.amount }}",
                }
            },
        ),
    )
    queued = await start(client, account, workflow_id, {"name": "Ada", "amount": 42})
    assert queued.status_code == 202
    assert queued.json()["status"] == "queued"
    await worker.drain()

    detail = await job(client, account, queued.json()["job_id"])
    assert detail["status"] == "succeeded"
    assert [step["id"] for step in detail["steps"]] == ["shape", "big", "notify"]
    assert detail["steps"][0]["output"] == {"greeting": "Hi Ada", "amount": 42}
    assert detail["result"]["status"] == 200
    assert detail["result"]["body"] == {"received": True}
    assert http_peer.requests[0]["json"] == {"text": "Hi Ada", "amount": 42}


async def test_false_filter_ends_the_run_successfully(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client,
        account,
        {"id": "big", "connector": "filter", "params": {"condition": "{{ input.amount > 10 }}"}},
        post_to(http_peer, "/hook"),
    )
    job_id = (await start(client, account, workflow_id, {"amount": 3})).json()["job_id"]
    await worker.drain()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded"
    assert detail["result"] == {"passed": False}
    assert http_peer.requests == []


async def test_flaky_service_succeeds_on_the_third_attempt(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    http_peer.reply(503, times=2)
    workflow_id = await make_workflow(client, account, post_to(http_peer, "/flaky"))
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    await worker.drain()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded"
    assert detail["attempts"] == 3
    assert detail["steps"][0]["attempts"] == 3
    assert http_peer.paths() == ["/flaky"] * 3


async def test_a_400_fails_at_once_into_the_dead_letters(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    http_peer.reply(400, {"error": "bad field"})
    workflow_id = await make_workflow(client, account, post_to(http_peer, "/strict"))
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    await worker.drain()
    detail = await job(client, account, job_id)
    assert detail["status"] == "failed"
    assert "HTTP 400" in detail["error"]
    assert len(http_peer.requests) == 1
    dead = (await client.get("/api/v1/dead-letters", headers=account.headers)).json()["data"]
    assert [item["job_id"] for item in dead] == [job_id]


async def test_exhausted_then_replayed_resumes_from_the_checkpoint(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    retry_twice = {"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02}
    http_peer.reply(200, {"charged": True})  # /first
    http_peer.reply(503, times=2)  # /second, both attempts
    workflow_id = await make_workflow(
        client,
        account,
        post_to(http_peer, "/first", id="first"),
        post_to(http_peer, "/second", id="second", retry=retry_twice),
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    await worker.drain()
    assert (await job(client, account, job_id))["status"] == "failed"
    assert http_peer.paths() == ["/first", "/second", "/second"]

    replay = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=account.headers)
    assert replay.status_code == 202
    await worker.drain()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded"
    assert http_peer.paths() == ["/first", "/second", "/second", "/second"]  # /first not repeated
    assert detail["steps"][0]["output"]["body"] == {"charged": True}


async def test_only_failed_jobs_can_be_retried(
    client: httpx.AsyncClient, signup: Any, worker: Worker
) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client, account, {"id": "a", "connector": "transform", "params": {}}
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    response = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=account.headers)
    assert_problem(response, 409, "job_not_failed")


async def test_on_error_continue_records_and_goes_on(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    http_peer.reply(404)
    workflow_id = await make_workflow(
        client,
        account,
        post_to(http_peer, "/missing", id="optional", on_error="continue"),
        {"id": "after", "connector": "transform", "params": {"went_on": True}},
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    await worker.drain()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded"
    assert detail["steps"][0]["status"] == "continued"
    assert "HTTP 404" in detail["steps"][0]["error"]
    assert detail["result"] == {"went_on": True}


async def test_delay_waits_without_a_worker_and_is_not_repeated(
    client: httpx.AsyncClient, signup: Any, worker: Worker, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client,
        account,
        {"id": "pause", "connector": "delay", "params": {"seconds": 30}},
        {"id": "after", "connector": "transform", "params": {"done": True}},
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    await worker.claim_and_start()
    await worker.settle()
    waiting = await job(client, account, job_id)
    assert waiting["status"] == "queued"
    assert [step["id"] for step in waiting["steps"]] == ["pause"]
    assert worker.running == {}
    async with runtime.db.write() as session, session.begin():  # fast-forward the clock
        await session.execute(update(Job).values(run_at=utcnow()))
    await worker.drain()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded"
    assert detail["steps"][0]["attempts"] == 1


async def test_a_dead_workers_job_resumes_elsewhere_without_repeating_steps(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any
) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client,
        account,
        post_to(http_peer, "/once", id="charge"),
        post_to(http_peer, "/then", id="notify"),
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    # Worker A claims the job, finishes step one, then dies (never writes again).
    async with runtime.db.write() as session, session.begin():
        [claimed] = await queue.claim(
            session,
            worker_id="dead-worker",
            limit=1,
            lease=timedelta(seconds=30),
            now=utcnow(),
            max_running_per_user=10,
        )
    dead = Worker(runtime, concurrency=1, worker_id="dead-worker")
    await dead.executor._run_step(
        claimed,
        (await dead.executor._definition(claimed)).steps[0],
        0,
        1,
        {"input": {}, "steps": {}},
    )
    await dead.http.aclose()
    assert http_peer.paths() == ["/once"]
    # Its lease runs out; another worker takes the job over.
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    survivor = Worker(runtime, concurrency=2, worker_id="survivor")
    await survivor.drain()
    await survivor.http.aclose()
    detail = await job(client, account, job_id)
    assert detail["status"] == "succeeded"
    assert detail["attempts"] == 2
    assert http_peer.paths() == ["/once", "/then"]


async def test_same_idempotency_key_one_job_one_debit(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client, account, {"id": "a", "connector": "transform", "params": {}}
    )
    first = await start(client, account, workflow_id, {"n": 1}, **{"Idempotency-Key": "run-1"})
    second = await start(client, account, workflow_id, {"n": 1}, **{"Idempotency-Key": "run-1"})
    assert first.json() == second.json()
    async with runtime.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["credits"] == 49


async def test_too_few_credits_is_402_and_nothing_is_queued(
    make_settings: Any, fresh_database: None
) -> None:
    from tests.conftest import serve_app

    async with serve_app(make_settings(free_credits=0)) as (client, runtime):
        signed = (
            await client.post(
                "/api/v1/auth/signup", json={"email": "poor@example.com", "password": "p" * 10}
            )
        ).json()
        headers = {"Authorization": f"Bearer {signed['access_token']}"}
        created = await client.post(
            "/api/v1/workflows",
            headers=headers,
            json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
        )
        response = await client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=headers
        )
        async with runtime.db.read() as session:
            jobs = await session.scalar(select(func.count()).select_from(Job))
    assert_problem(response, 402, "insufficient_credits")
    assert jobs == 0


async def test_cancel_a_queued_job(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, post_to(http_peer, "/never"))
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    await worker.drain()
    assert http_peer.requests == []
    again = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert_problem(again, 409, "job_finished")


async def test_cancel_a_running_job(
    client: httpx.AsyncClient, signup: Any, worker: Worker, http_peer: Any
) -> None:
    account = await signup()
    http_peer.hold.add("/slow")
    workflow_id = await make_workflow(
        client,
        account,
        post_to(http_peer, "/slow", id="slow"),
        post_to(http_peer, "/after", id="after"),
    )
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    draining = asyncio.create_task(worker.drain())
    await asyncio.to_thread(http_peer.arrived.wait, 10)
    assert (await job(client, account, job_id))["status"] == "running"
    cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert cancelled.json()["status"] == "cancelled"
    http_peer.release()
    await draining
    detail = await job(client, account, job_id)
    assert detail["status"] == "cancelled"
    assert http_peer.paths() == ["/slow"]  # the worker let go: no further step ran


async def test_another_users_job_is_404(client: httpx.AsyncClient, signup: Any) -> None:
    owner, stranger = await signup(), await signup()
    workflow_id = await make_workflow(
        client, owner, {"id": "a", "connector": "transform", "params": {}}
    )
    job_id = (await start(client, owner, workflow_id)).json()["job_id"]
    for response in (
        await client.get(f"/api/v1/jobs/{job_id}", headers=stranger.headers),
        await client.get(f"/api/v1/status/{job_id}", headers=stranger.headers),
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=stranger.headers),
        await client.post(f"/api/v1/jobs/{job_id}/retry", headers=stranger.headers),
        await start(client, stranger, workflow_id),
    ):
        assert_problem(response, 404, "not_found")
    assert (await client.get("/api/v1/jobs", headers=stranger.headers)).json()["data"] == []


async def test_jobs_list_pages_newest_first_with_filters(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client, account, {"id": "a", "connector": "transform", "params": {}}
    )
    started = [(await start(client, account, workflow_id)).json()["job_id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/jobs", params=params, headers=account.headers)).json()
        seen += [item["job_id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(started))
    queued = await client.get("/api/v1/jobs", params={"status": "queued"}, headers=account.headers)
    assert len(queued.json()["data"]) == 5
    none = await client.get("/api/v1/jobs", params={"status": "failed"}, headers=account.headers)
    assert none.json()["data"] == []


async def test_intake_queues_like_a_run(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    workflow_id = await make_workflow(
        client, account, {"id": "a", "connector": "transform", "params": {}}
    )
    response = await client.post(
        "/api/v1/intake",
        json={"workflow": workflow_id, "payload": {"x": 1}},
        headers=account.headers,
    )
    assert response.status_code == 202
    assert response.json()["job_id"].startswith("job_")
