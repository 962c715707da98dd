"""`levqor jobs replay`: an operator puts dead letters back in the queue."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.accounts.models import User
from levqor.bootstrap import build_runtime
from levqor.cli import app
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs.models import FAILED, Job, JobStep
from levqor.jobs.worker import Worker
from levqor.runtime import run_process_loop
from levqor.workflows.models import Workflow

runner = CliRunner()


def seed(settings: Settings) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        runtime = build_runtime(settings)
        async with runtime.db.write() as session, session.begin():
            user = User(email="ops@example.com", email_index="ops", password_hash="x", credits=0)
            session.add(user)
            await session.flush()
            flows = [
                Workflow(
                    user_id=user.id,
                    name=n,
                    current_version=1,
                    trigger_type="manual",
                    webhook_token_hash="h",
                    webhook_token_encrypted="e",
                )
                for n in ("a", "b")
            ]
            session.add_all(flows)
            await session.flush()
            jobs = {
                name: Job(
                    user_id=user.id,
                    workflow_id=flow.id,
                    workflow_version=1,
                    input={},
                    status=FAILED,
                    error="boom",
                    finished_at=utcnow() - age,
                )
                for name, flow, age in (
                    ("recent_a", flows[0], timedelta(minutes=5)),
                    ("old_a", flows[0], timedelta(days=3)),
                    ("recent_b", flows[1], timedelta(minutes=5)),
                )
            }
            session.add_all(jobs.values())
            await session.flush()
            session.add(
                JobStep(
                    job_id=jobs["recent_a"].id,
                    step_id="s",
                    position=0,
                    status="failed",
                    attempts=3,
                    error="boom",
                )
            )
            ids = {"workflow_a": flows[0].id, **{name: job.id for name, job in jobs.items()}}
        await runtime.close()
        return ids

    return asyncio.run(run())


def statuses(settings: Settings) -> dict[str, str]:
    async def run() -> dict[str, str]:
        runtime = build_runtime(settings)
        async with runtime.db.read() as session:
            rows = dict((await session.execute(select(Job.id, Job.status))).all())
        await runtime.close()
        return rows

    return asyncio.run(run())


@pytest.mark.usefixtures("cli_env")
def test_replay_by_workflow_and_time(settings: Settings) -> None:
    ids = seed(settings)
    since = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    result = runner.invoke(
        app, ["jobs", "replay", "--workflow", ids["workflow_a"], "--since", since, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"replayed": [ids["recent_a"]]}
    now = statuses(settings)
    assert now[ids["recent_a"]] == "queued"
    assert now[ids["old_a"]] == "failed"
    assert now[ids["recent_b"]] == "failed"

    everything = runner.invoke(app, ["jobs", "replay", "--json"])
    assert sorted(json.loads(everything.output)["replayed"]) == sorted(
        [ids["old_a"], ids["recent_b"]]
    )


def test_worker_health_follows_this_hosts_heartbeat(cli_env: Settings) -> None:
    assert runner.invoke(app, ["health", "database"]).exit_code == 0
    silent = runner.invoke(app, ["health", "worker"])
    assert silent.exit_code == 1
    assert "no worker on this host beat" in silent.output

    async def beat() -> None:
        runtime = build_runtime(cli_env)
        worker = Worker(runtime, concurrency=1)
        await worker._upkeep()
        await worker.http.aclose()
        await runtime.close()

    asyncio.run(beat())
    alive = runner.invoke(app, ["health", "worker"])
    assert alive.exit_code == 0, alive.output
    assert "worker alive" in alive.output


def _loop_that_runs(monkeypatch: pytest.MonkeyPatch, *, uvloop_installed: bool) -> str:
    if not uvloop_installed:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now fails
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    run_process_loop(main())
    return seen[0]


def test_worker_and_scheduler_loops_run_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loop_that_runs(monkeypatch, uvloop_installed=True) == "uvloop"


def test_without_uvloop_they_run_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loop_that_runs(monkeypatch, uvloop_installed=False) == "asyncio"
