"""Backup benchmark: `levqor backup run` and `levqor backup verify` on a database with a
million job rows, and the API's latency while the backup runs.

    python bench/backup.py [--backend sqlite|postgres|both] [--rows 1000000] [--clients 8]

Starts `levqor serve` (one process), seeds the finished runs of one user, then measures
the API (`GET /api/v1/me`, `--clients` threads back to back) for as long as a backup and
its verification take, and for the same time before, idle of backups. Reports the time,
the size, the peak memory of the backup command (with its pg_dump), and the API p50/p95
both ways against the SLO. Prints JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).parent.parent)  # not bench/: its queue.py would shadow the stdlib

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import threading
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import insert, select

from bench.api import each_backend, levqor_serve
from levqor.accounts.models import User
from levqor.config import load_settings
from levqor.db.base import new_id, utcnow
from levqor.db.engine import create_database
from levqor.jobs.models import Job
from levqor.workflows.models import Workflow, WorkflowVersion

PASSWORD = "benchmark password 1"
BATCH = 5000


async def seed(env: dict[str, str], rows: int) -> None:
    settings = load_settings(
        data_dir=Path(env["LEVQOR_DATA_DIR"]), database_url=env.get("LEVQOR_DATABASE_URL")
    )
    db = create_database(settings)
    try:
        async with db.session(write=True) as session, session.begin():
            user_id = (await session.scalars(select(User.id))).one()
            workflow = Workflow(
                user_id=user_id,
                name="bench",
                current_version=1,
                trigger_type="manual",
                webhook_token_hash="h",
                webhook_token_encrypted=db.key_ring.encrypt(b"token").decode(),
            )
            session.add(workflow)
            await session.flush()
            session.add(WorkflowVersion(workflow_id=workflow.id, version=1, definition={}))
            workflow_id = workflow.id
        now = utcnow()
        for offset in range(0, rows, BATCH):
            batch = []
            for index in range(offset, min(rows, offset + BATCH)):
                at = now - timedelta(seconds=index)
                batch.append(
                    {
                        "id": new_id("job"),
                        "user_id": user_id,
                        "workflow_id": workflow_id,
                        "workflow_version": 1,
                        "status": "succeeded",
                        "priority": 5,
                        "input": {"n": index},
                        "result": {"ok": True},
                        "attempts": 1,
                        "crashes": 0,
                        "replays": 0,
                        "run_at": at,
                        "created_at": at,
                        "started_at": at,
                        "finished_at": at,
                    }
                )
            async with db.session(write=True) as session, session.begin():
                await session.execute(insert(Job), batch)
    finally:
        await db.dispose()


def hammer(url: str, headers: dict[str, str], clients: int, stop: threading.Event) -> list[float]:
    """Latencies (ms) of back-to-back API calls from `clients` threads until `stop`."""
    took: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/api/v1/me")
                with lock:
                    took.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()
    return took


def percentiles(took: list[float]) -> dict[str, float]:
    ordered = sorted(took)
    return {
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)], 1),
    }


def while_measuring(
    url: str, headers: dict[str, str], clients: int, action: Any
) -> tuple[Any, list[float]]:
    stop = threading.Event()
    result: dict[str, list[float]] = {}
    thread = threading.Thread(
        target=lambda: result.update(took=hammer(url, headers, clients, stop))
    )
    thread.start()
    try:
        outcome = action()
    finally:
        stop.set()
        thread.join()
    return outcome, result["took"]


def levqor(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "levqor", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and not done.stdout.strip():
        raise RuntimeError(f"levqor {' '.join(args)} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def bench_backend(name: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    with levqor_serve(env, 1) as url:
        signed = httpx.post(
            f"{url}/api/v1/auth/signup", json={"email": "backup@example.com", "password": PASSWORD}
        ).json()
        headers = {"Authorization": f"Bearer {signed['access_token']}"}
        seeding = time.perf_counter()
        asyncio.run(seed(env, args.rows))
        seeded_s = time.perf_counter() - seeding
        started = time.perf_counter()
        (taken, verified), during = while_measuring(
            url,
            headers,
            args.clients,
            lambda: (levqor(env, "backup", "run"), levqor(env, "backup", "verify")),
        )
        busy_s = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        _none, idle = while_measuring(url, headers, args.clients, lambda: time.sleep(busy_s))
    return {
        "backend": name,
        "rows": args.rows,
        "seed_s": round(seeded_s, 1),
        "backup_s": taken["took_s"],
        "verify_s": verified["took_s"],
        "verified": verified["ok"],
        "verify_problems": verified["problems"],
        "size_mb": round(taken["size_bytes"] / 1e6, 1),
        "peak_rss_mib_of_the_commands": round(peak_kib / 1024, 1),
        "api_while_backing_up": percentiles(during),
        "api_idle": percentiles(idle),
        "slo_p95_ms": 200,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    print(
        json.dumps({"benchmark": "backup", "results": each_backend(args, bench_backend)}, indent=2)
    )


if __name__ == "__main__":
    main()
