"""On PostgreSQL an idle worker in another process is woken by NOTIFY, not by polling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from levqor.bootstrap import build_runtime
from levqor.config import Settings
from levqor.jobs.worker import Worker
from tests.conftest import TEST_DATABASE_URL

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
