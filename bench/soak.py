"""Soak: hours of steady load on PostgreSQL, watching what only time shows.

    python bench/soak.py [--duration 1800] [--rate RUNS_PER_S] [--sample 30]

Starts the processes of a deployment (`levqor serve`, `levqor worker`, `levqor
scheduler`) on a scratch PostgreSQL database, calibrates the capacity of webhook ->
one `http_request` step runs (a burst at full speed for --calibrate seconds) unless
--rate is given, then sends runs at half that rate, open loop, for --duration seconds.
Every --sample seconds it records each process's resident memory, the webhook's answer
latency (p50/p99) and the runs' end-to-end latency (created -> finished, p50/p99) over the
interval, the database's size and the rows in `jobs`. Prints JSON: the samples, and the
growth of memory (target: under 10% from the first sample after warm-up to the last) and
of the database (with retention on, growth per hour and the size it levels off at after
`LEVQOR_JOB_RETENTION_DAYS`). Not run by CI: the full run takes 30 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# Run as a script, bench/ comes first on the path, and bench/queue.py would shadow the
# standard library's queue (anyio imports it): the project's root instead.
sys.path[0] = str(Path(__file__).parent.parent)
from bench.api import free_port, postgres_database
from bench.runs import environment, rss_mib, sink, wait_ready, webhook_workflow


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


class Driver:
    """Posts to the webhook at a fixed rate (open loop: a slow answer does not slow the
    sending), keeping each answer's latency. At most MAX_IN_FLIGHT requests wait at
    once; past that a send is counted as `skipped` (the server is not keeping up) instead
    of queueing in this process, whose own backlog would otherwise be what is measured."""

    MAX_IN_FLIGHT = 256

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.sent = 0
        self.skipped = 0

    async def run(self, seconds: float) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            started = time.perf_counter()
            pending: set[asyncio.Task[None]] = set()
            while (elapsed := time.perf_counter() - started) < seconds:
                due = int(elapsed * self.rate) - self.sent - self.skipped
                for _ in range(max(0, due)):
                    if len(pending) >= self.MAX_IN_FLIGHT:
                        self.skipped += 1
                        continue
                    task = asyncio.create_task(self._one(client))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    self.sent += 1
                await asyncio.sleep(0.005)
            await asyncio.gather(*pending)

    async def _one(self, client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            answer = await client.post(self.url, json={"n": self.sent})
            if answer.status_code != 202:
                self.errors += 1
        except httpx.HTTPError:
            self.errors += 1
        self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def take(self) -> list[float]:
        taken, self.latencies_ms = self.latencies_ms, []
        return taken


async def database_sample(dsn: str, since: float) -> dict[str, Any]:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        size = await connection.fetchval("SELECT pg_database_size(current_database())")
        jobs = await connection.fetchval("SELECT count(*) FROM jobs")
        rows = await connection.fetch(
            "SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM jobs "
            "WHERE finished_at >= to_timestamp($1)",
            since,
        )
        waiting = await connection.fetchval(
            "SELECT count(*) FROM jobs WHERE status IN ('queued', 'retrying', 'running')"
        )
    finally:
        await connection.close()
    latencies = [float(row["ms"]) for row in rows]
    return {
        "database_mib": round(size / 2**20, 1),
        "jobs_rows": jobs,
        "jobs_waiting_or_running": waiting,
        "runs_finished": len(latencies),
        "run_p50_ms": percentile(latencies, 0.5),
        "run_p99_ms": percentile(latencies, 0.99),
    }


async def soak(args: argparse.Namespace, url: str, dsn: str, pids: dict[str, int]) -> Any:
    with sink() as target:
        hook_path, _ = webhook_workflow(url, target)
        hook = f"{url}/{hook_path}"
        rate = args.rate or await calibrate(hook, args.calibrate) / 2
        driver = Driver(hook, rate)
        sending = asyncio.create_task(driver.run(args.duration))
        samples = []
        started = time.time()
        while not sending.done():
            since = time.time()
            await asyncio.wait({sending}, timeout=args.sample)
            answers = driver.take()
            samples.append(
                {
                    "at_s": round(time.time() - started),
                    "rss_mib": {name: round(rss_mib(pid), 1) for name, pid in pids.items()},
                    "webhook_p50_ms": percentile(answers, 0.5),
                    "webhook_p99_ms": percentile(answers, 0.99),
                    **await database_sample(dsn, since),
                }
            )
            print(json.dumps(samples[-1]), file=sys.stderr)
    return rate, driver, samples


async def calibrate(hook: str, seconds: float) -> float:
    """Runs/s the webhook accepts at full speed (closed loop, 32 at a time)."""
    accepted = 0
    until = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while time.perf_counter() < until:
            answer = await client.post(hook, json={"n": 0})  # awaited before the +=,
            accepted += answer.status_code == 202  # which would read a stale count

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(loop(client) for _ in range(32)))
    return accepted / seconds


def summary(samples: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    warm = samples[min(1, len(samples) - 1)]  # the first sample includes warm-up
    last = samples[-1]
    growth = {
        name: round((last["rss_mib"][name] / warm["rss_mib"][name] - 1) * 100, 1)
        for name in last["rss_mib"]
    }
    hours = max((last["at_s"] - warm["at_s"]) / 3600, 1e-9)
    per_hour = (last["database_mib"] - warm["database_mib"]) / hours
    retention_h = float(os.environ.get("LEVQOR_JOB_RETENTION_DAYS", "30")) * 24
    return {
        "rss_growth_percent": growth,
        "rss_growth_under_10_percent": all(value < 10 for value in growth.values()),
        "run_p99_ms_first_last": [warm["run_p99_ms"], last["run_p99_ms"]],
        "run_p99_ms_median": statistics.median(
            [s["run_p99_ms"] for s in samples if s["run_p99_ms"] is not None] or [0]
        ),
        "database_mib_per_hour": round(per_hour, 1),
        "database_mib_level_with_retention": round(per_hour * retention_h, 1),
        "backlog_at_end": last["jobs_waiting_or_running"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800)
    parser.add_argument("--rate", type=float, default=None, help="runs/s; default: half capacity")
    parser.add_argument("--calibrate", type=float, default=15)
    parser.add_argument("--sample", type=float, default=30)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, postgres_database(args.postgres) as dsn:
        env = environment(Path(scratch), dsn)
        env["LEVQOR_UPKEEP_INTERVAL_S"] = "300"  # retention runs during the soak
        subprocess.run(
            [sys.executable, "-m", "levqor", "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        commands = {
            "serve": ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            "worker": ["worker", "--concurrency", "20"],
            "scheduler": ["scheduler"],
        }
        processes = {
            name: subprocess.Popen(
                [sys.executable, "-m", "levqor", *command],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, command in commands.items()
        }
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            pids = {name: process.pid for name, process in processes.items()}
            serve_children = _children(processes["serve"].pid)
            if serve_children:  # `serve` supervises; the API runs in its child
                pids["serve"] = serve_children[0]
            plain = dsn.replace("postgresql+asyncpg://", "postgresql://")
            rate, driver, samples = asyncio.run(soak(args, url, plain, pids))
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait(timeout=60)
    report = {
        "benchmark": "soak",
        "duration_s": args.duration,
        "rate_runs_per_s": round(rate, 1),
        "sent": driver.sent,
        "skipped_server_behind": driver.skipped,
        "errors": driver.errors,
        "summary": summary(samples, args),
        "samples": samples,
    }
    print(json.dumps(report, indent=2))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and "resource_tracker" not in (entry / "cmdline").read_text():
                found.append(int(entry.name))
    return sorted(found)


if __name__ == "__main__":
    main()
