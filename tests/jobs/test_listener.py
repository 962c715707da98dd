"""On PostgreSQL an idle worker in another process is woken by NOTIFY, not by polling;
the webhook intake's NOTIFY goes out after its commit, shared by the runs queued together,
and one that fails costs a poll, never a run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from levqor.bootstrap import build_runtime
from levqor.config import Settings
from levqor.jobs.models import SUCCEEDED, Job
from levqor.jobs.queue import wakeups
from levqor.jobs.queue.backends import PostgresBackend, backend_for
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import TEST_DATABASE_URL
from tests.factories import hook_path, webhook_workflow

pytestmark = pytest.mark.skipif(TEST_DATABASE_URL is None, reason="PostgreSQL only")


async def test_notify_wakes_an_idle_worker_at_once(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
    # The worker has its own runtime (as in another process) and would poll only every 60 s.
    worker_runtime = build_runtime(settings.model_copy(update={"worker_poll_interval_s": 60}))
    worker = Worker(worker_runtime, concurrency=2)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        account = await signup()
        created = await client.post(
            "/api/v1/workflows",
            headers=account.headers,
            json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
        )
        await asyncio.wait_for(worker.listening.wait(), timeout=10)
        started = time.monotonic()
        job_id = (
            await client.post(
                f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
            )
        ).json()["job_id"]
        status = ""
        while time.monotonic() - started < 10:
            status = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()[
                "status"
            ]
            if status == "succeeded":
                break
            await asyncio.sleep(0.02)
        assert status == "succeeded"
        assert time.monotonic() - started < 5  # far sooner than the 60 s poll
    finally:
        stop.set()
        await running
        await worker_runtime.close()


@asynccontextmanager
async def idle_worker(settings: Settings, *, poll_s: float) -> AsyncIterator[Worker]:
    """A worker with its own runtime, as in another process, listening once yielded."""
    runtime = build_runtime(settings.model_copy(update={"worker_poll_interval_s": poll_s}))
    worker = Worker(runtime, concurrency=10)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.listening.wait(), timeout=10)
        yield worker
    finally:
        stop.set()
        await running
        await runtime.close()


async def all_succeeded(runtime: Runtime, job_ids: list[str], *, within_s: float) -> bool:
    """Read from the database: polling the API this often would hit the rate limit."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with runtime.db.reading() as connection:
            done = await connection.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(job_ids), Job.status == SUCCEEDED)
            )
        if done == len(job_ids):
            return True
        await asyncio.sleep(0.05)
    return False


def wakeups_of(runtime: Runtime) -> wakeups.Wakeups:
    backend = backend_for(runtime.db)
    assert isinstance(backend, PostgresBackend)
    return backend.wakeups(runtime.db)


async def test_webhook_runs_queued_together_wake_an_idle_worker_with_shared_notifies(
    client: httpx.AsyncClient, signup: Any, settings: Settings, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await webhook_workflow(client, account)
    body = {"customer": {"email": "ada@example.com"}, "amount": 1}
    async with idle_worker(settings, poll_s=60):
        sent_before = wakeups_of(runtime).sent
        answers = await asyncio.gather(
            *(client.post(hook_path(workflow), json=body) for _ in range(30))
        )
        assert [answer.status_code for answer in answers] == [202] * 30
        job_ids = [answer.json()["job_id"] for answer in answers]
        assert await all_succeeded(runtime, job_ids, within_s=10)  # not the 60 s poll
    # Sent after the runs' commits, one at a time: the 30 shared a few.
    assert 1 <= wakeups_of(runtime).sent - sent_before < 30


async def test_a_wakeup_that_fails_costs_a_poll_not_the_run(
    client: httpx.AsyncClient,
    signup: Any,
    settings: Settings,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wakeups, "NOTIFY_UNFLUSHED", text("SELECT no_such_function()"))
    account = await signup()
    workflow = await webhook_workflow(client, account)
    async with idle_worker(settings, poll_s=0.2):
        sent_before = wakeups_of(runtime).sent
        answer = await client.post(
            hook_path(workflow), json={"customer": {"email": "a@example.com"}, "amount": 1}
        )
        assert answer.status_code == 202
        assert await all_succeeded(runtime, [answer.json()["job_id"]], within_s=10)
    assert wakeups_of(runtime).sent == sent_before  # none went out; the poll found the run
