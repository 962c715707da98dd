"""The worker loop: a finished job frees its slot at once, not at the next poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from levqor.config import Settings
from levqor.jobs.models import Job
from levqor.jobs.worker import Worker
from levqor.runtime import build_runtime


@pytest.mark.parametrize("per_user", [10, 1])
async def test_a_free_slot_is_refilled_without_waiting_for_the_poll(
    client: httpx.AsyncClient, signup: Any, settings: Settings, per_user: int
) -> None:
    """With a per-user limit of 1, the next job may only be claimed once the last one's
    final state has committed: that commit must wake the worker, not the poll."""
    account = await signup()
    created = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
    )
    job_ids = [
        (
            await client.post(
                f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
            )
        ).json()["job_id"]
        for _ in range(20)
    ]
    limits = {"worker_poll_interval_s": 30, "max_running_jobs_per_user": per_user}
    runtime = build_runtime(settings.model_copy(update=limits))
    worker = Worker(runtime, concurrency=1)
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(worker.run(stop))
    try:
        while time.monotonic() - started < 20:
            # Read the table, not the API: polling the API would meet its rate limit.
            async with runtime.db.read() as session:
                done = await session.scalar(
                    select(func.count()).select_from(Job).where(Job.status == "succeeded")
                )
            if done == len(job_ids):
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await running
        await runtime.close()
    assert done == len(job_ids)
    assert elapsed < 10  # one lost wake-up alone would cost the 30 s poll
