"""Queue benchmark: enqueue rate, burn-down, enqueue-to-start latency, CPU per job.

    python bench/queue.py [--backend sqlite|postgres|both] [--jobs 20000 100000]
                          [--workers 2] [--concurrency 10] [--latency-jobs 200]

Each backend gets a fresh database with one user and a one-step no-op workflow
(`transform`). For each burn-down, jobs are inserted in bulk, then `levqor worker`
processes work them off; finished jobs stay in the table (history is kept). Two rates:
from spawning the workers (their start-up counts, as it does for anyone who starts a
worker to drain a queue) and steady (first claim to last job). CPU per job counts the
workers from process start and, on PostgreSQL, every server process. Latency runs from
enqueue to the step body's start, with idle workers (a job every 50 ms) and at half the
steady rate. BENCH_SQLITE_SYNCHRONOUS=FULL|NORMAL sets SQLite's durability (default: the
product's, FULL). End-to-end runs through the webhook are in `bench/runs.py`. Prints one
JSON report.
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
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text

from bench.api import postgres_database
from levqor.accounts.models import User
from levqor.bootstrap import build_runtime
from levqor.config import Settings, load_settings
from levqor.db import migrate
from levqor.db.base import new_id, utcnow
from levqor.jobs import queue
from levqor.jobs.models import RUNNING_SQL, SUCCEEDED, WAITING_SQL, Job, JobStep
from levqor.workflows.models import Workflow, WorkflowVersion

SQLITE_SYNCHRONOUS = os.environ.get("BENCH_SQLITE_SYNCHRONOUS")  # FULL or NORMAL; the default's
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
    if SQLITE_SYNCHRONOUS:
        env["LEVQOR_SQLITE_SYNCHRONOUS"] = SQLITE_SYNCHRONOUS
    return env


async def seed(settings: Settings) -> tuple[str, str]:
    runtime = build_runtime(settings)
    async with runtime.db.write() as session, session.begin():
        user = User(
            email="bench@example.com", email_index="bench", password_hash="x", credits=10**9
        )
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


async def unfinished(settings: Settings) -> bool:
    """Any job waiting or running? (Walks the partial indexes; counting every
    succeeded job would scan the whole table while the workers run.)"""
    runtime = build_runtime(settings)
    async with runtime.db.read() as session:
        found = await session.scalar(
            select(Job.id).where(text(f"{WAITING_SQL} OR {RUNNING_SQL}")).limit(1)
        )
    await runtime.close()
    return found is not None


async def timeline(settings: Settings) -> tuple[datetime, datetime, datetime] | None:
    """The first job's claim, the first job's end and the last job's end, as the
    database saw them."""
    runtime = build_runtime(settings)
    async with runtime.db.read() as session:
        first_start, first_end, last_end = (
            await session.execute(
                select(
                    func.min(Job.started_at), func.min(Job.finished_at), func.max(Job.finished_at)
                )
            )
        ).one()
    await runtime.close()
    if first_start is None or first_end is None or last_end is None:
        return None
    return first_start, first_end, last_end


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process, plus what its exited backends used (counted in
    the postmaster's children time)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)
        if name != "postgres":
            continue
        values = fields.split()
        tick = os.sysconf("SC_CLK_TCK")
        total += (int(values[11]) + int(values[12])) / tick
        if values[1] == "1":  # the postmaster: its exited children's time too
            total += (int(values[13]) + int(values[14])) / tick
    return total


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
    settings: Settings,
    env: dict[str, str],
    ids: tuple[str, str],
    jobs: int,
    args: argparse.Namespace,
    postgres: bool,
) -> dict[str, Any]:
    await clear(settings)
    rate = await enqueue(settings, *ids, jobs)
    spawned_at = utcnow()
    workers = start_workers(env, args.workers, args.concurrency)
    cpu_before = sum(cpu_seconds(w.pid) for w in workers)
    db_before = postgres_cpu_seconds() if postgres else 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < args.timeout:
        await asyncio.sleep(0.05)
        if not await unfinished(settings):
            break
    worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
    db_cpu = (postgres_cpu_seconds() - db_before) if postgres else 0.0
    stop(workers)
    done = await succeeded(settings)
    seen = await timeline(settings)
    if seen is None:
        raise SystemExit("no job finished: see the workers' log")
    first_start, first_end, last_end = seen
    return {
        "jobs": jobs,
        "completed": done,
        "enqueue_jobs_per_s": round(rate, 1),
        # From spawning the worker processes to the last job's end: start-up counts.
        "from_spawn_jobs_per_s": round(done / (last_end - spawned_at).total_seconds(), 1),
        # From the first claim to the last job's end: what running workers sustain.
        "steady_jobs_per_s": round(done / (last_end - first_start).total_seconds(), 1),
        # Spawn to the first job done: imports, connecting, the first claim.
        "worker_start_s": round((first_end - spawned_at).total_seconds(), 3),
        # Worker CPU from process start (start-up included) to the last job.
        "cpu_ms_per_job": {
            "workers": round(worker_cpu * 1000 / max(done, 1), 3),
            "database": round(db_cpu * 1000 / max(done, 1), 3),
            "total": round((worker_cpu + db_cpu) * 1000 / max(done, 1), 3),
        },
    }


async def clear(settings: Settings) -> None:
    runtime = build_runtime(settings)
    async with runtime.db.write() as session, session.begin():
        await session.execute(delete(JobStep))
        await session.execute(delete(Job))
    await runtime.close()


async def latency(
    settings: Settings, ids: tuple[str, str], *, count: int, per_second: float, tick_s: float
) -> dict[str, Any]:
    """Enqueue `count` jobs at `per_second` (in ticks of `tick_s`), each insert with a
    NOTIFY as the API sends; report how long each waited until its step's body began."""
    runtime = build_runtime(settings)
    queued: list[str] = []
    per_tick = max(1, round(per_second * tick_s))
    next_tick = time.perf_counter()
    while len(queued) < count:
        batch = [new_id("job") for _ in range(min(per_tick, count - len(queued)))]
        async with runtime.db.write() as session, session.begin():
            session.add_all(
                Job(id=job_id, user_id=ids[0], workflow_id=ids[1], workflow_version=1, input={})
                for job_id in batch
            )
            await queue.notify(session)
        queued += batch
        next_tick += max(tick_s, len(batch) / per_second)
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    await asyncio.sleep(2)
    # To the step body's start (its checkpoint's started_at), not the job's: that is
    # stamped before the claim statement is even sent.
    async with runtime.db.read() as session:
        rows = (
            await session.execute(
                select(Job.created_at, JobStep.started_at)
                .join(JobStep, JobStep.job_id == Job.id)
                .where(Job.id.in_(queued))
            )
        ).all()
    await runtime.close()
    waits = sorted((start - created).total_seconds() * 1000 for created, start in rows if start)
    return {
        "jobs": count,
        "jobs_per_s": round(per_second, 1),
        "started": len(waits),
        "p50_ms": round(statistics.median(waits), 2),
        "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 2),
    }


async def latencies(
    settings: Settings,
    env: dict[str, str],
    ids: tuple[str, str],
    args: argparse.Namespace,
    capacity: float,
) -> dict[str, Any]:
    await clear(settings)
    workers = start_workers(env, args.workers, args.concurrency)
    await asyncio.sleep(3)  # let the workers start and go idle
    try:
        idle = await latency(
            settings, ids, count=args.latency_jobs, per_second=20, tick_s=0.05
        )  # one job every 50 ms
        half = await latency(
            settings,
            ids,
            count=int(capacity / 2 * args.half_load_s),
            per_second=capacity / 2,
            tick_s=0.01,
        )
    finally:
        stop(workers)
    return {"idle": idle, "half_load": half}


async def bench(
    name: str, data_dir: Path, database_url: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    env = environment(data_dir, database_url)
    settings = load_settings(data_dir=data_dir, database_url=database_url, _env_file=None)
    migrate.upgrade(settings)
    ids = await seed(settings)
    runs = [
        await burn_down(settings, env, ids, jobs, args, postgres=database_url is not None)
        for jobs in args.jobs
    ]
    capacity = min(run["steady_jobs_per_s"] for run in runs)
    return {
        "backend": name,
        "burn_down": runs,
        "latency": await latencies(settings, env, ids, args, capacity),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--jobs", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--half-load-s", type=float, default=5.0)
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
