"""Chaos: workers SIGKILLed or stopped (SIGTERM) at random, Redis and PostgreSQL killed
under load, the scheduler's leader killed. Nothing may be lost, nothing finished may run
again (nothing at all, when workers are stopped rather than killed), and the API answers
503 (never 500) while the database is away.

Every server here is the test's own (a PostgreSQL cluster from initdb on a free port, a
redis-server), started by the test and killed by it: the machine's shared ones are never
touched. CI runs the short form; `make chaos` the long one (LEVQOR_CHAOS_RUNS=1000).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import func, select, update

from levqor.config import Settings
from levqor.db import migrate
from levqor.jobs.models import Job, ScheduleFire
from levqor.runtime import Runtime
from levqor.workflows.models import WorkflowVersion
from tests.conftest import PASSWORD, _settings, serve_app
from tests.peers import HttpPeer, PostgresServer, RedisServer

pytestmark = pytest.mark.chaos
RUNS = int(os.environ.get("LEVQOR_CHAOS_RUNS", "240"))
WORKERS, CONCURRENCY = 3, 4
HEARTBEAT_S = 0.5


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.init()
    yield server
    server.remove()


@pytest.fixture
def settings(postgres: PostgresServer, tmp_path: Path) -> Settings:
    built = _settings(
        data_dir=tmp_path / "data",
        database_url=postgres.url,
        allow_private_urls=["127.0.0.1/32"],
        rate_limit_per_minute=1_000_000,
        free_credits=1_000_000,
        # Every run is queued before a worker starts: intake would push back past the
        # floor, and this test is about what the workers lose, not about intake.
        intake_min_backlog=RUNS,
        worker_heartbeat_s=HEARTBEAT_S,
        job_lease_s=30,
        scheduler_interval_s=0.5,
        db_pool_size=5,
    )
    migrate.upgrade(built)
    return built


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    async with serve_app(settings) as served:
        yield served


def environment(settings: Settings) -> dict[str, str]:
    """What a `levqor` process needs to share this test's database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    assert settings.jwt_secret is not None
    assert settings.database_url is not None
    env.update(
        {
            "LEVQOR_DATA_DIR": str(settings.data_dir),
            "LEVQOR_DATABASE_URL": settings.database_url,
            "LEVQOR_JWT_SECRET": settings.jwt_secret.get_secret_value(),
            "LEVQOR_ENCRYPTION_KEYS": settings.encryption_keys[0].get_secret_value(),
            "LEVQOR_ALLOW_PRIVATE_URLS": "127.0.0.1/32",
            "LEVQOR_WORKER_HEARTBEAT_S": str(HEARTBEAT_S),
            "LEVQOR_WORKER_POLL_INTERVAL_S": "0.2",
            "LEVQOR_SCHEDULER_INTERVAL_S": "0.5",
            "LEVQOR_DB_POOL_SIZE": "4",
        }
    )
    return env


def process(settings: Settings, *command: str, log: Path) -> subprocess.Popen[bytes]:
    """The same `levqor` processes deploy/compose.yaml runs, on this test's database."""
    with log.open("ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "levqor", *command],
            env=environment(settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def signup(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"chaos-{random.randrange(10**9)}@example.com"
    answer = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def three_step_workflow(
    client: httpx.AsyncClient, headers: dict[str, str], peer: HttpPeer
) -> str:
    def call(name: str) -> dict[str, Any]:
        return {
            "id": name,
            "connector": "http_request",
            "params": {
                "method": "POST",
                "url": f"{peer.url}/{name}",
                "json": {"job": "{{ input.n }}"},
                "idempotency_key": True,
            },
            "retry": {"max_attempts": 5, "backoff_s": 0.05, "max_backoff_s": 0.2},
        }

    definition = {
        "name": "chaos",
        "steps": [
            call("charge"),
            {"id": "shape", "connector": "transform", "params": {"n": "{{ input.n }}"}},
            call("notify"),
        ],
    }
    created = await client.post(
        "/api/v1/workflows", json={"definition": definition}, headers=headers
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def statuses(runtime: Runtime, workflow_id: str) -> Counter[str]:
    """How many of the workflow's runs are in each state (the database is shared by
    this module's tests)."""
    async with runtime.db.read() as session:
        rows = await session.execute(
            select(Job.status, func.count())
            .where(Job.workflow_id == workflow_id)
            .group_by(Job.status)
        )
    return Counter({status: count for status, count in rows})


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_workers_stopped_at_random_lose_nothing(
    api: tuple[httpx.AsyncClient, Runtime], settings: Settings, tmp_path: Path, stop_signal: int
) -> None:
    """SIGKILL: only a step in flight when its worker died may run again. SIGTERM (a
    rolling restart): none may; a stopping worker finishes its steps, beating, and
    hands back, unstarted, whatever it claimed meanwhile. Its steps here outlast two
    and a half beats, the silence after which the others would take it for dead."""
    client, runtime = api
    killed = stop_signal == signal.SIGKILL
    runs = RUNS if killed else max(24, RUNS // 10)
    peer = HttpPeer()
    # A service that takes its time, so stops land mid-step.
    peer.delay_s = 0.04 if killed else HEARTBEAT_S * 3
    peer.start()
    headers = await signup(client)
    workflow_id = await three_step_workflow(client, headers, peer)
    for n in range(runs):
        queued = await client.post(
            f"/api/v1/workflows/{workflow_id}/runs", json={"input": {"n": n}}, headers=headers
        )
        assert queued.status_code == 202, queued.text
    log = tmp_path / "workers.log"
    workers = [
        process(settings, "worker", "--concurrency", str(CONCURRENCY), log=log)
        for _ in range(WORKERS)
    ]
    kills = 0
    deadline = time.monotonic() + 180
    try:
        while (counts := await statuses(runtime, workflow_id))["succeeded"] + counts[
            "failed"
        ] < runs:
            assert time.monotonic() < deadline, f"runs stalled: {counts}"
            await asyncio.sleep(random.uniform(0.5, 1.5))
            victim = random.randrange(WORKERS)
            workers[victim].send_signal(stop_signal)
            workers[victim].wait(timeout=60)
            kills += 1
            workers[victim] = process(
                settings, "worker", "--concurrency", str(CONCURRENCY), log=log
            )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        peer.stop()

    assert kills >= 2
    assert await statuses(runtime, workflow_id) == Counter({"succeeded": runs})
    calls = Counter(call_of(request) for request in peer.requests)
    # Every step of every run reached the service.
    assert set(calls) == {(path, n) for path in ("/charge", "/notify") for n in range(runs)}
    repeated = sum(count - 1 for count in calls.values())
    # At least once: only a step in flight when its worker died may run again, and
    # every repeat carries the first try's idempotency key.
    assert repeated <= (kills * CONCURRENCY if killed else 0)
    keys: dict[tuple[object, object], set[str]] = {}
    for request in peer.requests:
        headers = cast(dict[str, str], request["headers"])
        keys.setdefault(call_of(request), set()).add(headers["idempotency-key"])
    assert all(len(found) == 1 for found in keys.values())


def call_of(request: dict[str, object]) -> tuple[object, object]:
    """(step path, run number) of a request a step sent to the peer."""
    body = cast(dict[str, Any], request["json"])
    return request["path"], body["job"]


async def test_postgres_restarted_under_load(
    api: tuple[httpx.AsyncClient, Runtime],
    settings: Settings,
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    """While the database is down the API answers 503 with Retry-After; once it is
    back, the API answers again, the worker reconnects and every accepted run ends."""
    client, runtime = api
    peer = HttpPeer()
    peer.start()
    headers = await signup(client)
    workflow_id = await three_step_workflow(client, headers, peer)
    worker = process(settings, "worker", "--concurrency", "4", log=tmp_path / "worker.log")
    answers: list[int] = []
    accepted = 0

    async def load(seconds: float) -> None:
        nonlocal accepted
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            answer = await client.post(
                f"/api/v1/workflows/{workflow_id}/runs",
                json={"input": {"n": len(answers)}},
                headers=headers,
            )
            answers.append(answer.status_code)
            accepted += answer.status_code == 202
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "2"
                assert answer.json()["code"] == "database_unavailable"
            await asyncio.sleep(0.02)

    try:
        await load(1.0)
        postgres.kill()
        await load(2.0)
        postgres.start()
        await load(2.0)
        deadline = time.monotonic() + 60
        while (await statuses(runtime, workflow_id))["succeeded"] < accepted:
            assert time.monotonic() < deadline, await statuses(runtime, workflow_id)
            await asyncio.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        peer.stop()
    assert 500 not in answers
    assert 503 in answers
    assert answers[-1] == 202  # recovered
    assert await statuses(runtime, workflow_id) == Counter({"succeeded": accepted})


async def test_redis_killed_and_restarted_under_load(settings: Settings, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    answers: list[int] = []
    limited = settings.model_copy(update={"redis_url": redis.url, "redis_retry_interval_s": 0.2})
    try:
        async with serve_app(limited) as (client, _runtime):
            headers = await signup(client)

            async def load(until: float) -> None:
                while time.monotonic() < until:
                    answer = await client.get("/api/v1/me", headers=headers)
                    answers.append(answer.status_code)

            async def chaos() -> None:
                await asyncio.sleep(1.0)
                redis.stop()
                await asyncio.sleep(1.0)
                redis.start()

            until = time.monotonic() + 3.0
            await asyncio.gather(chaos(), *(load(until) for _ in range(8)))
    finally:
        redis.stop()
    assert len(answers) > 100
    assert set(answers) == {200}


async def test_the_scheduler_leader_dies_and_another_takes_over_without_a_double_fire(
    api: tuple[httpx.AsyncClient, Runtime], settings: Settings, tmp_path: Path
) -> None:
    client, runtime = api
    headers = await signup(client)
    definition = {
        "name": "every minute",
        "trigger": {"type": "schedule", "cron": "* * * * *"},
        "steps": [{"id": "a", "connector": "transform"}],
    }
    created = await client.post(
        "/api/v1/workflows", json={"definition": definition}, headers=headers
    )
    workflow_id = created.json()["id"]
    async with runtime.db.write() as session, session.begin():  # saved long ago: due now
        await session.execute(
            update(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == workflow_id)
            .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 10))
        )
    logs = [tmp_path / f"scheduler-{n}.log" for n in range(2)]
    schedulers = [process(settings, "scheduler", log=log) for log in logs]
    try:
        leader = await wait_for_leader(logs, exclude=None)
        await wait_for_fires(runtime, workflow_id, 1)
        started = time.monotonic()
        schedulers[leader].send_signal(signal.SIGKILL)
        schedulers[leader].wait()
        follower = await wait_for_leader(logs, exclude=leader)
        took = time.monotonic() - started
        await asyncio.sleep(1.5)  # a few ticks of the new leader
    finally:
        for scheduler in schedulers:
            if scheduler.poll() is None:
                scheduler.terminate()
                scheduler.wait(timeout=30)
    assert follower != leader
    assert took < 5, f"took {took:.1f} s"
    async with runtime.db.read() as session:
        fires = list(
            await session.scalars(
                select(ScheduleFire.fire_at).where(ScheduleFire.workflow_id == workflow_id)
            )
        )
        jobs = await session.scalar(
            select(func.count()).select_from(Job).where(Job.workflow_id == workflow_id)
        )
    assert len(fires) == len(set(fires))
    assert jobs == len(fires)  # one run per fire time, whoever fired it


async def wait_for_leader(logs: list[Path], exclude: int | None, timeout_s: float = 10) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for index, log in enumerate(logs):
            if index != exclude and "scheduler_leads" in log.read_text(errors="replace"):
                return index
        await asyncio.sleep(0.05)
    raise AssertionError("no scheduler took the lead")


async def wait_for_fires(runtime: Runtime, workflow_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with runtime.db.read() as session:
            fired = await session.scalar(
                select(func.count())
                .select_from(ScheduleFire)
                .where(ScheduleFire.workflow_id == workflow_id)
            )
        if fired and fired >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the leader never fired")
