"""A worker process SIGKILLed mid-run: another worker process finishes the job from its
last checkpoint. Real processes, a real loopback HTTP service, the suite's database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from levqor.config import Settings


def worker_process(settings: Settings) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    assert settings.jwt_secret is not None
    env.update(
        {
            "LEVQOR_DATA_DIR": str(settings.data_dir),
            "LEVQOR_JWT_SECRET": settings.jwt_secret.get_secret_value(),
            "LEVQOR_ENCRYPTION_KEYS": settings.encryption_keys[0].get_secret_value(),
            "LEVQOR_JOB_LEASE_S": "2",
            "LEVQOR_ALLOW_PRIVATE_URLS": "127.0.0.1/32",
            "LEVQOR_WORKER_POLL_INTERVAL_S": "0.1",
            "LEVQOR_WORKER_SHUTDOWN_TIMEOUT_S": "5",
        }
    )
    if settings.database_url:
        env["LEVQOR_DATABASE_URL"] = settings.database_url
    return subprocess.Popen(
        [sys.executable, "-m", "levqor", "worker", "--concurrency", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def wait_for_status(
    client: httpx.AsyncClient, account: Any, job_id: str, wanted: str, timeout_s: float = 30
) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
        if job["status"] == wanted:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job stayed {job.get('status')}: {job}")


async def test_killed_worker_loses_nothing(
    client: httpx.AsyncClient, signup: Any, settings: Settings, http_peer: Any
) -> None:
    import asyncio

    account = await signup()
    http_peer.hold.add("/slow")
    steps = [
        {
            "id": name,
            "connector": "http_request",
            "params": {"method": "POST", "url": f"{http_peer.url}/{name}"},
        }
        for name in ("first", "slow", "last")
    ]
    workflow = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "crash", "steps": steps}},
    )
    job_id = (
        await client.post(
            f"/api/v1/workflows/{workflow.json()['id']}/runs", json={}, headers=account.headers
        )
    ).json()["job_id"]

    doomed = worker_process(settings)
    try:
        assert await asyncio.to_thread(http_peer.arrived.wait, 30), "worker never reached /slow"
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=10)
    finally:
        doomed.kill()
    http_peer.hold.clear()
    http_peer.release()
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()[
        "status"
    ] == "running"  # held by a dead worker until its lease runs out

    survivor = worker_process(settings)
    try:
        job = await wait_for_status(client, account, job_id, "succeeded")
    finally:
        survivor.send_signal(signal.SIGTERM)
        output, _ = survivor.communicate(timeout=20)
    assert survivor.returncode == 0, output
    assert job["attempts"] == 2
    # "first" finished before the kill and is not repeated; "slow" was in flight when the
    # worker died, so it runs again (at-least-once), then "last".
    assert http_peer.paths() == ["/first", "/slow", "/slow", "/last"]
    assert [step["id"] for step in job["steps"]] == ["first", "slow", "last"]
