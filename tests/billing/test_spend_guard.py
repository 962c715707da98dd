"""The spend guard: past a day's LLM limit, LLM calls pause until midnight, audited."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from levqor.accounts.models import ROLE_ADMIN, User
from levqor.billing import spend_guard
from levqor.billing.models import LlmUsage, SpendPause
from levqor.cli import app as cli_app
from levqor.db.base import utcnow
from levqor.jobs.models import Job
from levqor.jobs.scheduler import Scheduler
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, serve_app
from tests.factories import completion
from tests.partners.test_money_races import waiting_on_locks

STEP = {"id": "sum", "connector": "llm", "params": {"prompt": "Summarise {{ input.n }}"}}


async def run_llm_step(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], workflow_id: str
) -> dict[str, Any]:
    run = await client.post(
        f"/api/v1/workflows/{workflow_id}/runs", headers=headers, json={"input": {"n": 1}}
    )
    return await drained(client, runtime, headers, run.json()["job_id"])


async def drained(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], job_id: str
) -> dict[str, Any]:
    """Let a worker take every job that is due, then read this one."""
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()
    answer = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    job: dict[str, Any] = answer.json()
    return job


async def test_a_user_past_the_daily_limit_is_paused_until_an_operator_resumes(
    make_settings: Any,
    fresh_database: None,
    http_peer: Any,
    cli_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http_peer.default = (200, completion("ok"), {})  # each call costs 270 micro-dollars
    settings = make_settings(
        llm_base_url=f"{http_peer.url}/v1",
        llm_model="gpt-4o-mini",
        spend_guard_user_daily_micro_usd=500,
    )
    async with serve_app(settings) as (client, runtime):
        email = "spender@example.com"
        signed = await client.post(
            "/api/v1/auth/signup", json={"email": email, "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        created = await client.post(
            "/api/v1/workflows",
            headers=headers,
            json={"definition": {"name": "ai", "steps": [STEP]}},
        )
        workflow_id = created.json()["id"]

        first = await run_llm_step(client, runtime, headers, workflow_id)
        second = await run_llm_step(client, runtime, headers, workflow_id)  # 540 >= 500
        assert first["status"] == second["status"] == "succeeded"
        # The third run meets the pause: held with the reason, not failed, not dead.
        held = await run_llm_step(client, runtime, headers, workflow_id)
        assert held["status"] == "held"
        assert "spend guard" in held["error"]
        assert len(http_peer.requests) == 2  # the paused call never reached the model
        dead = await client.get("/api/v1/dead-letters", headers=headers)
        assert dead.json()["data"] == []

        # The AI planner falls back to the rules planner while paused: no model call.
        plan = await client.post(
            "/api/v1/plan", headers=headers, json={"prompt": "every hour post to slack"}
        )
        assert plan.status_code == 201
        assert plan.json()["planner"] == "rules"
        assert len(http_peer.requests) == 2

        monkeypatch.setenv("LEVQOR_SPEND_GUARD_USER_DAILY_MICRO_USD", "500")
        runner = CliRunner()
        status = await asyncio.to_thread(
            runner.invoke, cli_app, ["spend-guard", "status", "--json"]
        )
        assert status.exit_code == 0, status.output
        assert '"spent_micro_usd": 540' in status.output
        assert '"paused": true' in status.output
        resumed = await asyncio.to_thread(runner.invoke, cli_app, ["spend-guard", "resume", email])
        assert resumed.exit_code == 0, resumed.output
        assert "Resumed." in resumed.output

        # Lifted: the held run goes on by itself, from its LLM step (810 < 2 x 500).
        finished = await drained(client, runtime, headers, held["job_id"])
        assert (finished["status"], finished["error"]) == ("succeeded", None)
        paused_again = await run_llm_step(client, runtime, headers, workflow_id)  # 1,080
        assert paused_again["status"] == "succeeded"
        at_midnight = await run_llm_step(client, runtime, headers, workflow_id)
        assert at_midnight["status"] == "held"

        # Midnight comes (moved here to now): today's spend becomes yesterday's, the
        # pause and the hold end, and the scheduler releases the run.
        async with runtime.db.session(write=True) as session, session.begin():
            now = utcnow()
            await session.execute(update(SpendPause).values(until=now))
            await session.execute(update(Job).values(run_at=now).where(Job.status == "held"))
            await session.execute(update(LlmUsage).values(created_at=now - timedelta(days=1)))
        await Scheduler(runtime).tick(utcnow())
        assert (await drained(client, runtime, headers, at_midnight["job_id"]))["status"] == (
            "succeeded"
        )
        assert len(http_peer.requests) == 5

        async with runtime.db.session(write=True) as session, session.begin():
            await session.execute(update(User).values(role=ROLE_ADMIN))
        log = await client.get("/api/v1/admin/audit", headers=headers)
        actions = [entry["action"] for entry in log.json()["data"]]
        assert actions.count("spend_guard_paused") == 2
        assert actions.count("spend_guard_resumed") == 1
        paused = next(e for e in log.json()["data"] if e["action"] == "spend_guard_paused")
        assert paused["object_id"] == signed.json()["user"]["id"]
        assert paused["detail"]["limit_micro_usd"] == 500


def usage_of(user_id: str, micro_usd: int) -> LlmUsage:
    return LlmUsage(
        user_id=user_id,
        purpose="step",
        model="gpt-4o-mini",
        prompt_tokens=1,
        completion_tokens=1,
        cost_micro_usd=micro_usd,
    )


async def test_the_scheduled_check_pauses_the_server_past_its_default_fifty_dollars(
    signup: Any, runtime: Runtime
) -> None:
    """Eleven users each under their own $5 limit, $53.90 in all: no call of theirs was
    last to finish here (another process recorded it), so only the scheduled check sees
    it. The server's $50 limit is on by default."""
    assert runtime.settings.spend_guard_daily_micro_usd == 50_000_000
    users = [await signup() for _ in range(11)]
    async with runtime.db.write() as session, session.begin():
        session.add_all(usage_of(user.id, 4_900_000) for user in users)
    await Scheduler(runtime).tick(utcnow())
    async with runtime.db.read() as session:
        pauses = (await session.scalars(select(SpendPause))).all()
    assert [(pause.user_id, pause.spent_micro_usd) for pause in pauses] == [(None, 53_900_000)]


async def test_two_calls_past_the_limit_at_once_add_one_pause(
    signup: Any, runtime: Runtime
) -> None:
    """Both calls have recorded their cost and are about to pause the user while a third
    transaction holds the audit log's lock: before, both found no pause and both added
    one (each pause lifted allows a day's limit more)."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite's writers are serial")
    user = await signup()
    async with runtime.db.write() as session, session.begin():
        session.add(usage_of(user.id, 4_000_000))  # each call takes it past $5
    usage = {"model": "m", "prompt_tokens": 1, "completion_tokens": 1}

    async def call() -> None:
        async with runtime.db.write() as session, session.begin():
            await spend_guard.record_usage(
                session,
                settings=runtime.settings,
                user_id=user.id,
                purpose="step",
                usage=usage | {"cost_micro_usd": 3_000_000},
            )

    async with runtime.db.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(text("SELECT pg_advisory_xact_lock(hashtext('levqor_audit'))"))
        calls = [asyncio.create_task(call()) for _ in range(2)]
        async with asyncio.timeout(20):
            waiting = 0
            while waiting < 2:
                waiting = await waiting_on_locks(runtime)
        await transaction.commit()
    await asyncio.gather(*calls)
    async with runtime.db.read() as session:
        pauses = (await session.scalars(select(SpendPause))).all()
    assert [pause.user_id for pause in pauses] == [user.id]
