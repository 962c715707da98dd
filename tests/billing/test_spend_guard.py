"""The spend guard: past a day's LLM limit, LLM calls pause until midnight, audited."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from levqor.accounts.models import ROLE_ADMIN, User
from levqor.cli import app as cli_app
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, serve_app
from tests.factories import completion

STEP = {"id": "sum", "connector": "llm", "params": {"prompt": "Summarise {{ input.n }}"}}


async def run_llm_step(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], workflow_id: str
) -> dict[str, Any]:
    run = await client.post(
        f"/api/v1/workflows/{workflow_id}/runs", headers=headers, json={"input": {"n": 1}}
    )
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()
    answer = await client.get(f"/api/v1/jobs/{run.json()['job_id']}", headers=headers)
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
        stopped = await run_llm_step(client, runtime, headers, workflow_id)
        assert stopped["status"] == "failed"
        assert "spend guard" in stopped["error"]
        assert len(http_peer.requests) == 2  # the paused call never reached the model

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

        again = await run_llm_step(client, runtime, headers, workflow_id)  # 810 < 2 x 500
        assert again["status"] == "succeeded"
        paused_again = await run_llm_step(client, runtime, headers, workflow_id)  # 1,080
        assert paused_again["status"] == "succeeded"
        assert (await run_llm_step(client, runtime, headers, workflow_id))["status"] == "failed"

        async with runtime.db.session(write=True) as session, session.begin():
            await session.execute(update(User).values(role=ROLE_ADMIN))
        log = await client.get("/api/v1/admin/audit", headers=headers)
        actions = [entry["action"] for entry in log.json()["data"]]
        assert actions.count("spend_guard_paused") == 2
        assert actions.count("spend_guard_resumed") == 1
        paused = next(e for e in log.json()["data"] if e["action"] == "spend_guard_paused")
        assert paused["object_id"] == signed.json()["user"]["id"]
        assert paused["detail"]["limit_micro_usd"] == 500
