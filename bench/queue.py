"""Queue benchmark: enqueue rate, burn-down, enqueue-to-start latency, CPU per job.

    python bench/queue.py [--backend sqlite|postgres|both] [--jobs 2000] [--workers 2]
                          [--concurrency 10] [--latency-jobs 100]

Each backend gets a fresh database with one user and a one-step no-op workflow
(`transform`). Jobs are inserted in bulk, then `levqor worker` processes burn them down;
latency is measured with idle workers, a job every 50 ms. Prints one JSON report.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and "queue" would name this
# file instead of the standard library module that asyncio and redis import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parent.parent))

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any

from sqlalchemy import func, insert, select

from bench.api import postgres_database
from levqor.accounts.models import User
from levqor.config import Settings, load_settings
from levqor.db import migrate
from levqor.db.base import new_id, utcnow
from levqor.jobs import queue
from levqor.jobs.models import SUCCEEDED, Job
from levqor.runtime import build_runtime
from levqor.workflows.models import Workflow, WorkflowVersion

DEFINITION = {"name": "noop", "steps": [{"id": "noop", "connector": "transform", "params": {}}]}


def environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env.update(
        {
            "LEVQOR_DATA_DIR": str(data_dir),
            "LEVQOR_WORKER_POLL_INTERVAL_S": "0.05",
            "LEVQOR_MAX_RUNNING_JOBS_PER_USER": "100000",
            "LEVQOR_LOG_LEVEL": "WARNING",
        }
    )
    if database_url:
        env["LEVQOR_DATABASE_URL"] = database_url
    return env


async def seed(settings: Settings) -> tuple[str, str]:
    runtime = build_runtime(settings)
    async with runtime.db.write() as session, session.begin():
        user = User(email="bench@example.com", password_hash="x", credits=10**9)
        session.add(user)
        await session.flush()
        workflow = Workflow(
            user_id=user.id,
            name="noop",
            current_version=1,
            trigger_type="manual",
            webhook_token_hash="h",
            webhook_token_encrypted="e",
        )
        session.add(workflow)
        await session.flush()
        session.add(WorkflowVersion(workflow_id=workflow.id, version=1, definition=DEFINITION))
    await runtime.close()
    return user.id, workflow.id


async def enqueue(settings: Settings, user_id: str, workflow_id: str, count: int) -> float:
    """Bulk insert `count` jobs; jobs a second."""
    runtime = build_runtime(settings)
    rows = [
        {
            "id": new_id("job"),
            "user_id": user_id,
            "workflow_id": workflow_id,
            "workflow_version": 1,
            "status": "queued",
            "priority": 5,
            "input": {},
            "attempts": 0,
            "run_at": utcnow(),
            "created_at": utcnow(),
        }
        for _ in range(count)
    ]
    started = time.perf_counter()
    for offset in range(0, count, 1000):
        async with runtime.db.write() as session, session.begin():
            await session.execute(insert(Job), rows[offset : offset + 1000])
    elapsed = time.perf_counter() - started
    await runtime.close()
    return count / elapsed


async def succeeded(settings: Settings) -> int:
    runtime = build_runtime(settings)
    async with runtime.db.read() as session:
        done = await session.scalar(
            select(func.count()).select_from(Job).where(Job.status == SUCCEEDED)
        )
    await runtime.close()
    return int(done or 0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_workers(
    env: dict[str, str], count: int, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "levqor", "worker", "--concurrency", str(concurrency)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=60)


async def burn_down(
    settings: Settings, env: dict[str, str], ids: tuple[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    rate = await enqueue(settings, *ids, args.jobs)
    workers = start_workers(env, args.workers, args.concurrency)
    cpu_before = sum(cpu_seconds(w.pid) for w in workers)
    started = time.perf_counter()
    while (done := await succeeded(settings)) < args.jobs:
        if time.perf_counter() - started > args.timeout:
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
    stop(workers)
    return {
        "jobs": args.jobs,
        "completed": done,
        "enqueue_jobs_per_s": round(rate, 1),
        "burn_down_s": round(elapsed, 2),
        "burn_down_jobs_per_s": round(done / elapsed, 1),
        "worker_cpu_ms_per_job": round(cpu * 1000 / max(done, 1), 3),
    }


async def idle_latency(
    settings: Settings, env: dict[str, str], ids: tuple[str, str], count: int
) -> dict[str, Any]:
    workers = start_workers(env, 2, 10)
    await asyncio.sleep(3)  # let the workers start and go idle
    runtime = build_runtime(settings)
    queued = []
    for _ in range(count):
        job_id = new_id("job")
        async with runtime.db.write() as session, session.begin():
            session.add(
                Job(id=job_id, user_id=ids[0], workflow_id=ids[1], workflow_version=1, input={})
            )
            await queue.notify(session)  # as the API does: wakes listening workers
        queued.append(job_id)
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)
    async with runtime.db.read() as session:
        rows = (
            await session.execute(select(Job.created_at, Job.started_at).where(Job.id.in_(queued)))
        ).all()
    await runtime.close()
    stop(workers)
    waits = sorted((start - created).total_seconds() * 1000 for created, start in rows if start)
    return {
        "jobs": count,
        "started": len(waits),
        "p50_ms": round(statistics.median(waits), 2),
        "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 2),
    }


async def bench(
    name: str, data_dir: Path, database_url: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    env = environment(data_dir, database_url)
    settings = load_settings(data_dir=data_dir, database_url=database_url, _env_file=None)
    migrate.upgrade(settings)
    ids = await seed(settings)
    result = await burn_down(settings, env, ids, args)
    result["idle_latency"] = await idle_latency(settings, env, ids, args.latency_jobs)
    return {"backend": name, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.backend in ("sqlite", "both"):
            results.append(asyncio.run(bench("sqlite", Path(scratch) / "sqlite", None, args)))
        if args.backend in ("postgres", "both"):
            with postgres_database(args.postgres) as url:
                results.append(asyncio.run(bench("postgres", Path(scratch) / "pg", url, args)))
    print(
        json.dumps(
            {
                "benchmark": "queue",
                "workers": args.workers,
                "concurrency": args.concurrency,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
