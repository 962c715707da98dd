"""Automatic rollback: a new version that starts failing is replaced by the one before
it, audited and alerted; not when the owner turned it off; never a rollback of a
rollback; `levqor rollback workflow` by hand."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.audit.models import AuditEntry
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.jobs.worker import Worker
from levqor.ops import rollback
from levqor.ops.models import Alert
from levqor.runtime import Runtime
from tests.factories import make_workflow, start

WORKS = {"id": "a", "connector": "transform", "params": {"n": "{{ input.n }}"}}
BREAKS = {"id": "a", "connector": "transform", "params": {"n": "{{ input.n.missing.deeper }}"}}


async def runs(
    client: httpx.AsyncClient, account: Any, runtime: Runtime, workflow: str, n: int
) -> None:
    for index in range(n):
        assert (await start(client, account, workflow, {"n": index})).status_code == 202
    worker = Worker(runtime, concurrency=4)
    await worker.drain()
    await worker.http.aclose()


async def new_version(
    client: httpx.AsyncClient, account: Any, workflow: str, step: dict[str, Any]
) -> None:
    definition = {"name": "orders", "steps": [step]}
    saved = await client.put(
        f"/api/v1/workflows/{workflow}", json={"definition": definition}, headers=account.headers
    )
    assert saved.status_code == 200, saved.text


async def current(client: httpx.AsyncClient, account: Any, workflow: str) -> int:
    body = (await client.get(f"/api/v1/workflows/{workflow}", headers=account.headers)).json()
    return int(body["version"])


async def test_a_version_that_starts_failing_is_rolled_back(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await make_workflow(client, account, WORKS)
    await runs(client, account, runtime, workflow, 5)
    await new_version(client, account, workflow, BREAKS)
    await runs(client, account, runtime, workflow, 4)
    assert await rollback.check(runtime.db, runtime.settings) == []  # 4 runs: too few to say
    await runs(client, account, runtime, workflow, 1)
    [done] = await rollback.check(runtime.db, runtime.settings)
    assert (done.from_version, done.to_version) == (2, 1)
    assert "5 of its 5 runs failed (100%)" in done.reason
    assert await current(client, account, workflow) == 1
    async with runtime.db.read() as session:
        entry = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "workflow_rolled_back")
        )
        alert = await session.scalar(select(Alert))
    assert entry is not None
    assert (entry.actor, entry.object_id, entry.detail["to_version"]) == ("system", workflow, 1)
    assert alert is not None
    assert alert.title == "Workflow test rolled back to version 1"
    assert await rollback.check(runtime.db, runtime.settings) == []  # a rollback is not judged


async def test_the_owner_can_turn_it_off(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await make_workflow(client, account, WORKS)
    switched = await client.put(
        f"/api/v1/workflows/{workflow}/auto-rollback",
        json={"enabled": False},
        headers=account.headers,
    )
    assert switched.json()["auto_rollback"] is False
    await runs(client, account, runtime, workflow, 5)
    await new_version(client, account, workflow, BREAKS)
    await runs(client, account, runtime, workflow, 6)
    assert await rollback.check(runtime.db, runtime.settings) == []
    assert await current(client, account, workflow) == 2


def test_by_hand_with_the_cli(cli_env: Settings) -> None:
    import asyncio

    from levqor.bootstrap import build_runtime
    from levqor.workflows.models import Workflow, WorkflowVersion

    async def two_versions() -> str:
        runtime = build_runtime(cli_env)
        try:
            async with runtime.db.write() as session, session.begin():
                from levqor.accounts.models import User

                user = User(email="owner@example.com", email_index="x" * 64, password_hash="x")
                session.add(user)
                await session.flush()
                workflow = Workflow(
                    user_id=user.id,
                    name="w",
                    current_version=2,
                    previous_version=1,
                    trigger_type="manual",
                    webhook_token_hash="h" * 64,
                    webhook_token_encrypted="e",
                )
                session.add(workflow)
                await session.flush()
                for number in (1, 2):
                    session.add(
                        WorkflowVersion(
                            workflow_id=workflow.id,
                            version=number,
                            definition={
                                "name": "w",
                                "steps": [{"id": "a", "connector": "transform"}],
                            },
                        )
                    )
                return workflow.id
        finally:
            await runtime.close()

    workflow_id = asyncio.run(two_versions())
    done = CliRunner().invoke(cli_app, ["rollback", "workflow", workflow_id])
    assert done.exit_code == 0, done.output
    assert "version 1 is current again (was 2)" in done.stdout
    missing = CliRunner().invoke(cli_app, ["rollback", "workflow", "wf_none"])
    assert missing.exit_code == 1
