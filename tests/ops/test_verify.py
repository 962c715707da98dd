"""`levqor verify`: a healthy `levqor up` passes every row; a stopped Redis, a missing
backup and a silent worker each fail their row, by name, with exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from levqor.bootstrap import build_runtime
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs.models import WorkerBeat
from levqor.ops import verify
from levqor.runtime import Runtime
from tests.peers import UpProcess


def rows(found: list[verify.Check]) -> dict[str, tuple[bool, str]]:
    return {check.name: (check.ok, check.detail) for check in found}


def test_a_healthy_installation_passes_every_check(tmp_path: Path, http_peer: Any) -> None:
    settings = {
        "alert_webhook_url": f"{http_peer.url}/alerts",
        "stripe_secret_key": "sk_test_" + "x" * 24,
        "stripe_webhook_secret": "whsec_" + "y" * 24,
    }
    up = UpProcess(tmp_path / "data", **settings)
    try:
        up.wait_ready()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
        env.update({f"LEVQOR_{name.upper()}": value for name, value in settings.items()})
        env["LEVQOR_DATA_DIR"] = str(up.data_dir)
        command = [sys.executable, "-m", "levqor", "verify", "--json", "--url", up.url]
        deadline = time.monotonic() + 60
        while True:  # the first scheduler tick takes and verifies the first backup
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        up.stop()
    found = {row["name"]: row for row in json.loads(done.stdout)}
    assert done.returncode == 0, found
    assert set(found) == {
        "database",
        "migrations",
        "workers",
        "scheduler",
        "queue",
        "backups",
        "slo",
        "spend guard",
        "alert channels",
        "stripe",
        "key ring",
        "security headers",
    }
    assert all(row["ok"] for row in found.values())


async def test_a_stopped_redis_fails_its_row(
    make_settings: Any, fresh_database: None, redis_server: Any
) -> None:
    settings: Settings = make_settings(redis_url=redis_server.url)
    redis_server.stop()
    runtime = build_runtime(settings)
    try:
        found = rows(await verify.run_checks(runtime, "http://127.0.0.1:9"))
    finally:
        await runtime.close()
    ok, detail = found["redis"]
    assert ok is False
    assert "Connection" in detail or "Error" in detail
    assert found["database"][0] is True  # one failure does not hide the rest


async def test_no_backup_and_a_silent_worker_fail_their_rows(runtime: Runtime) -> None:
    beat = timedelta(seconds=runtime.settings.worker_heartbeat_s * 3)
    async with runtime.db.write() as session, session.begin():
        session.add(WorkerBeat(id="wrk_ok", host="a", pid=1, concurrency=4, heartbeat_at=utcnow()))
        session.add(
            WorkerBeat(
                id="wrk_gone", host="b", pid=2, concurrency=4, heartbeat_at=utcnow() - beat * 2
            )
        )
    found = rows(await verify.run_checks(runtime, "http://127.0.0.1:9"))
    assert found["backups"] == (
        False,
        "no verified backup: run `levqor backup run` and `levqor backup verify`",
    )
    assert found["workers"] == (False, "1 alive, but silent: b:2")
    assert found["migrations"][0] is True
    assert found["security headers"][0] is False  # nothing answers there


def test_the_command_exits_1_naming_the_failed_rows(cli_env: Settings) -> None:
    answer = CliRunner().invoke(cli_app, ["verify", "--url", "http://127.0.0.1:9"])
    assert answer.exit_code == 1
    assert "backups" in answer.stdout
    assert "FAIL" in answer.stdout
