"""The worker loop: a finished job frees its slot at once, not at the next poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from levqor.config import Settings
from levqor.jobs.worker import Worker
from levqor.runtime import build_runtime


async def test_a_free_slot_is_refilled_without_waiting_for_the_poll(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
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
    runtime = build_runtime(settings.model_copy(update={"worker_poll_interval_s": 30}))
    worker = Worker(runtime, concurrency=1)
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(worker.run(stop))
    try:
        while time.monotonic() - started < 20:
            page = (
                await client.get(
                    "/api/v1/jobs",
                    params={"status": "succeeded", "limit": 50},
                    headers=account.headers,
                )
            ).json()
            if len(page["data"]) == len(job_ids):
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await running
        await runtime.close()
    assert len(page["data"]) == len(job_ids)
    assert elapsed < 10  # one lost wake-up alone would cost the 30 s poll
