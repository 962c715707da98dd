"""Signed callbacks as the receiving server sees them (verified with standardwebhooks)."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from levqor.db.base import utcnow
from levqor.jobs.models import CallbackDelivery
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import assert_problem


@pytest.fixture
async def fast_callbacks(make_settings: Any, fresh_database: None) -> Any:
    from tests.conftest import serve_app

    async with serve_app(make_settings(callback_backoff_s=0.01)) as served:
        yield served


async def run_with_callback(
    client: httpx.AsyncClient, peer: Any, *, fail: bool = False, path: str = "/callback"
) -> tuple[dict[str, str], str]:
    body = (
        await client.post(
            "/api/v1/auth/signup", json={"email": "cb@example.com", "password": "p" * 10}
        )
    ).json()
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    step: dict[str, Any] = {"id": "a", "connector": "transform", "params": {"ok": True}}
    if fail:
        step = {
            "id": "a",
            "connector": "http_request",
            "params": {"url": f"{peer.url}/broken", "method": "POST"},
        }
    created = await client.post(
        "/api/v1/workflows",
        headers=headers,
        json={"definition": {"name": "cb", "steps": [step]}},
    )
    run = await client.post(
        f"/api/v1/workflows/{created.json()['id']}/runs",
        headers=headers,
        json={"input": {}, "callback_url": f"{peer.url}{path}"},
    )
    return headers, run.json()["job_id"]


async def drain(runtime: Runtime) -> None:
    worker = Worker(runtime, concurrency=2)
    await worker.drain()
    await worker.http.aclose()


def received(peer: Any) -> list[dict[str, Any]]:
    return [r for r in peer.requests if r["path"] == "/callback"]


async def test_a_finished_run_posts_a_verifiable_signed_callback(
    fast_callbacks: Any, http_peer: Any
) -> None:
    client, runtime = fast_callbacks
    headers, job_id = await run_with_callback(client, http_peer)
    await drain(runtime)
    [call] = received(http_peer)
    secret = (await client.get("/api/v1/callbacks/secret", headers=headers)).json()["secret"]
    assert secret.startswith("whsec_")
    raw = json.dumps(call["json"], separators=(",", ":"))
    verified = Webhook(secret).verify(raw, {k.lower(): v for k, v in call["headers"].items()})
    assert verified["type"] == "job.succeeded"
    assert verified["data"] == {
        "job_id": job_id,
        "workflow_id": verified["data"]["workflow_id"],
        "status": "succeeded",
        "result": {"ok": True},
        "error": None,
    }
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(
            raw, {k.lower(): v for k, v in call["headers"].items()}
        )
    history = (await client.get(f"/api/v1/jobs/{job_id}/callbacks", headers=headers)).json()
    assert history[0]["status"] == "delivered"
    assert history[0]["id"] == call["headers"]["webhook-id"]
    assert [a["status_code"] for a in history[0]["attempts"]] == [200]


async def test_callback_retries_until_the_receiver_answers(
    fast_callbacks: Any, http_peer: Any
) -> None:
    client, runtime = fast_callbacks
    http_peer.reply(500, times=2)
    headers, job_id = await run_with_callback(client, http_peer)
    await drain(runtime)
    calls = received(http_peer)
    assert len(calls) == 3
    assert len({c["headers"]["webhook-id"] for c in calls}) == 1  # same id on every try
    history = (await client.get(f"/api/v1/jobs/{job_id}/callbacks", headers=headers)).json()
    assert history[0]["status"] == "delivered"
    assert [a["status_code"] for a in history[0]["attempts"]] == [500, 500, 200]
    assert history[0]["attempts"][0]["error"] == "HTTP 500"


async def test_failed_and_cancelled_runs_call_back_too(fast_callbacks: Any, http_peer: Any) -> None:
    client, runtime = fast_callbacks
    http_peer.reply(400)  # the step's own call fails for good
    headers, failed_id = await run_with_callback(client, http_peer, fail=True)
    await drain(runtime)
    [call] = received(http_peer)
    assert call["json"]["type"] == "job.failed"
    assert call["json"]["data"]["job_id"] == failed_id
    assert "HTTP 400" in call["json"]["data"]["error"]

    workflow_id = (await client.get("/api/v1/workflows", headers=headers)).json()["data"][0]["id"]
    queued = await client.post(
        f"/api/v1/workflows/{workflow_id}/runs",
        headers=headers,
        json={"callback_url": f"{http_peer.url}/callback"},
    )
    cancelled_id = queued.json()["job_id"]
    await client.post(f"/api/v1/jobs/{cancelled_id}/cancel", headers=headers)
    await drain(runtime)
    last = received(http_peer)[-1]["json"]
    assert (last["type"], last["data"]["job_id"]) == ("job.cancelled", cancelled_id)


async def test_rotating_the_secret_changes_the_signature(
    fast_callbacks: Any, http_peer: Any
) -> None:
    client, runtime = fast_callbacks
    headers, _ = await run_with_callback(client, http_peer)
    old = (await client.get("/api/v1/callbacks/secret", headers=headers)).json()["secret"]
    new = (await client.post("/api/v1/callbacks/secret/rotate", headers=headers)).json()["secret"]
    assert new != old
    await drain(runtime)
    [call] = received(http_peer)
    raw = json.dumps(call["json"], separators=(",", ":"))
    lowered = {k.lower(): v for k, v in call["headers"].items()}
    Webhook(new).verify(raw, lowered)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(raw, lowered)


async def test_another_users_callbacks_are_404(client: httpx.AsyncClient, signup: Any) -> None:
    owner, stranger = await signup(), await signup()
    created = await client.post(
        "/api/v1/workflows",
        headers=owner.headers,
        json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
    )
    job_id = (
        await client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=owner.headers
        )
    ).json()["job_id"]
    answer = await client.get(f"/api/v1/jobs/{job_id}/callbacks", headers=stranger.headers)
    assert_problem(answer, 404, "not_found")


async def test_a_callback_to_a_refused_address_fails_once(
    fast_callbacks: Any, http_peer: Any
) -> None:
    client, runtime = fast_callbacks
    body = (
        await client.post(
            "/api/v1/auth/signup", json={"email": "ssrf@example.com", "password": "p" * 10}
        )
    ).json()
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    created = await client.post(
        "/api/v1/workflows",
        headers=headers,
        json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
    )
    port = http_peer.url.rsplit(":", 1)[1]
    run = await client.post(
        f"/api/v1/workflows/{created.json()['id']}/runs",
        headers=headers,
        json={"callback_url": f"http://127.0.0.2:{port}/callback"},
    )
    await drain(runtime)
    history = (
        await client.get(f"/api/v1/jobs/{run.json()['job_id']}/callbacks", headers=headers)
    ).json()
    assert history[0]["status"] == "failed"
    assert len(history[0]["attempts"]) == 1
    assert "private or internal" in history[0]["attempts"][0]["error"]
    assert received(http_peer) == []


async def test_a_callback_receiver_that_never_answers_is_a_timed_out_attempt(
    make_settings: Any, fresh_database: None, hostile_peer: Any
) -> None:
    from tests.conftest import serve_app

    settings = make_settings(
        callback_backoff_s=0.01, callback_timeout_s=0.5, callback_max_attempts=1
    )
    async with serve_app(settings) as (client, runtime):
        headers, job_id = await run_with_callback(client, hostile_peer, path="/silent")
        await drain(runtime)
        history = (await client.get(f"/api/v1/jobs/{job_id}/callbacks", headers=headers)).json()
    assert history[0]["status"] == "failed"
    [attempt] = history[0]["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"] == "no answer within 0.5 s"


async def test_a_callback_answer_is_judged_by_its_status_and_its_body_never_read(
    fast_callbacks: Any, hostile_peer: Any
) -> None:
    """A receiver answering 200 with 50 MiB: delivered, and none of it held."""
    client, runtime = fast_callbacks
    headers, job_id = await run_with_callback(client, hostile_peer, path="/declared")
    tracemalloc.start()
    try:
        await drain(runtime)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    history = (await client.get(f"/api/v1/jobs/{job_id}/callbacks", headers=headers)).json()
    assert history[0]["status"] == "delivered"
    assert [a["status_code"] for a in history[0]["attempts"]] == [200]
    assert peak < 16 * 1024 * 1024


async def test_a_worker_polling_for_jobs_often_looks_for_due_retries_at_their_own_pace(
    make_settings: Any, fresh_database: None, http_peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs polled every 50 ms, retries waiting 5 s at least: a due retry is looked for
    once a second (a fifth of the wait), not twenty times, and sent once that second is up."""
    from tests.conftest import serve_app

    settings = make_settings(worker_poll_interval_s=0.05, callback_backoff_s=5)
    async with serve_app(settings) as (client, runtime):
        http_peer.reply(500, times=1)
        headers, job_id = await run_with_callback(client, http_peer)
        worker = Worker(runtime, concurrency=2)
        await worker.drain()  # the run, and its callback's first try (HTTP 500)
        async with runtime.db.write() as session, session.begin():
            await session.execute(
                update(CallbackDelivery).values(next_attempt_at=utcnow() - timedelta(seconds=1))
            )
        clock = FakeClock(time.monotonic())
        monkeypatch.setattr("levqor.jobs.worker.time", clock)

        clock.advance(0.5)
        assert await worker.claim_and_start() == 0  # due, but not looked for yet
        clock.advance(0.6)
        assert await worker.claim_and_start() == 1
        await asyncio.gather(*worker.sending.values())
        await worker.http.aclose()
        history = (await client.get(f"/api/v1/jobs/{job_id}/callbacks", headers=headers)).json()
    assert [a["status_code"] for a in history[0]["attempts"]] == [500, 200]
    assert history[0]["status"] == "delivered"


class FakeClock:
    """The `time` module, with a monotonic clock moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
