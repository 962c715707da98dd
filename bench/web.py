"""Web benchmark: the dashboard (/app) and the runs list (/app/runs) of a user with 10,000
runs in history, under wrk with a signed-in cookie session.

Starts `levqor serve` (2 processes) on SQLite and on PostgreSQL + Redis, seeds the runs,
logs in through the page (CSRF token and all), and prints one JSON report:

    python bench/web.py [--backend sqlite|postgres|both] [--runs 10000] [--duration 10]

The SLO for pages: p95 under 200 ms. wrk is a Debian package (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select

# Run as a script, bench/ comes first on the path, and bench/queue.py would shadow the
# standard library's queue: the project's root instead.
sys.path[0] = str(Path(__file__).parent.parent)
from bench.api import each_backend, levqor_serve, run_wrk
from levqor.accounts.models import User
from levqor.config import load_settings
from levqor.db.base import new_id, utcnow
from levqor.db.engine import create_database
from levqor.jobs.models import Job
from levqor.workflows.models import Workflow, WorkflowVersion

PASSWORD = "benchmark password 1"
SLO_P95_MS = 200
DEFINITION = {
    "name": "bench",
    "trigger": {"type": "manual", "timezone": "UTC"},
    "steps": [{"id": "noop", "connector": "transform", "params": {"n": 1}}],
}


def sign_in(url: str) -> str:
    """Sign up through the page; the Cookie header of the session."""
    with httpx.Client(base_url=url) as client:
        page = client.get("/signup")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, "no CSRF token on /signup"
        email = f"bench-web-{os.getpid()}@example.com"
        answer = client.post(
            "/signup", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        assert answer.status_code == 303, answer.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def seed_runs(env: dict[str, str], count: int) -> None:
    """`count` finished runs of one workflow for the only user, spread over 30 days."""
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
                webhook_token_encrypted="e",
            )
            session.add(workflow)
            await session.flush()
            session.add(WorkflowVersion(workflow_id=workflow.id, version=1, definition=DEFINITION))
            now = utcnow()
            rows = []
            for index in range(count):
                at = now - timedelta(minutes=index * 4)
                rows.append(
                    {
                        "id": new_id("job"),
                        "user_id": user_id,
                        "workflow_id": workflow.id,
                        "workflow_version": 1,
                        "status": "succeeded",
                        "priority": 5,
                        "input": {},
                        "result": {"n": 1},
                        "attempts": 1,
                        "crashes": 0,
                        "replays": 0,
                        "run_at": at,
                        "created_at": at,
                        "started_at": at,
                        "finished_at": at,
                    }
                )
            for offset in range(0, count, 1000):
                await session.execute(insert(Job), rows[offset : offset + 1000])
    finally:
        await db.dispose()


def bench_backend(name: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    with levqor_serve(env, args.workers) as url:
        cookie = sign_in(url)
        asyncio.run(seed_runs(env, args.runs))
        headers = {"Cookie": cookie}
        pages = {}
        for label, path in (("dashboard", "/app"), ("runs_list", "/app/runs")):
            page = httpx.get(url + path, headers=headers)
            # wrk counts only 4xx/5xx as errors: make sure this is the page, not a redirect.
            assert page.status_code == 200, f"{path} answered {page.status_code}"
            assert "/app/runs/job_" in page.text, f"{path} lists no run"
            run_wrk(url, path, "", threads=2, connections=args.connections, duration_s=2,
                    headers=headers)  # fmt: skip
            result = run_wrk(
                url,
                path,
                "",
                threads=2,
                connections=args.connections,
                duration_s=args.duration,
                headers=headers,
            )
            result["within_slo"] = result["p95_ms"] < SLO_P95_MS
            pages[label] = result
    return {"backend": name, **pages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the user's history")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="levqor serve processes")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    results = each_backend(args, bench_backend)
    report = {
        "benchmark": "web",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "runs_in_history": args.runs,
        "connections": args.connections,
        "duration_s": args.duration,
        "slo_p95_ms": SLO_P95_MS,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
