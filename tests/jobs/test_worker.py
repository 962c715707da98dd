"""The worker loop: a finished job frees its slot at once, not at the next poll."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from levqor.bootstrap import build_runtime
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.models import Job, WorkerBeat
from levqor.jobs.queue import JobWrite
from levqor.jobs.worker import Worker
from tests.factories import record_statements


@pytest.mark.parametrize("per_user", [10, 1])
async def test_a_free_slot_is_refilled_without_waiting_for_the_poll(
    client: httpx.AsyncClient, signup: Any, settings: Settings, per_user: int
) -> None:
    """With a per-user limit of 1, the next job may only be claimed once the last one's
    final state has committed: that commit must wake the worker, not the poll."""
    account = await signup()
    created = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
    )
    job_ids = [
        (
            await client.post(
                f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
            )
        ).json()["job_id"]
        for _ in range(20)
    ]
    limits = {"worker_poll_interval_s": 30, "max_running_jobs_per_user": per_user}
    runtime = build_runtime(settings.model_copy(update=limits))
    worker = Worker(runtime, concurrency=1)
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(worker.run(stop))
    try:
        while time.monotonic() - started < 20:
            # Read the table, not the API: polling the API would meet its rate limit.
            done = await succeeded_runs(runtime)
            if done == len(job_ids):
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await running
        await runtime.close()
    assert done == len(job_ids)
    assert elapsed < 10  # one lost wake-up alone would cost the 30 s poll


async def queue_runs(client: httpx.AsyncClient, signup: Any, count: int) -> None:
    """A new account's one-step workflow, run `count` times (queued, no worker yet)."""
    account = await signup()
    created = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
    )
    for _ in range(count):
        await client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
        )


async def jobs_by_id(runtime: Any) -> dict[str, Job]:
    """Every job in the table, as the database has it now."""
    async with runtime.db.read() as session:
        return {job.id: job for job in await session.scalars(select(Job))}


async def claimed_by(worker: Worker, limit: int) -> list[queue.Claimed]:
    """Jobs taken in `worker`'s name, as its claim would (none of them started)."""
    async with worker.runtime.db.write() as session, session.begin():
        return await queue.claim(
            session,
            worker_id=worker.worker_id,
            limit=limit,
            lease=worker.lease,
            now=utcnow(),
            max_running_per_user=10,
        )


async def test_a_job_its_worker_no_longer_runs_is_handed_back_at_the_next_beat(
    client: httpx.AsyncClient, signup: Any, runtime: Any
) -> None:
    """A job whose task ended without writing its state (the database was away when it
    tried) is held by nobody: the next beat hands it back, unless a write for it is
    still queued (then the write decides)."""
    await queue_runs(client, signup, 2)
    worker = Worker(runtime, concurrency=2)
    # Its writes carry no claim, which would take the handed-back job again at once.
    worker.executor.writer.claimer = None
    orphan, writing = await claimed_by(worker, 2)
    pending = worker.executor.writer.submit(
        JobWrite(writing.id, state=queue.succeeded({}, utcnow()))
    )
    assert worker.executor.writer.unwritten() == {writing.id}
    await worker._upkeep()
    await pending
    await worker.http.aclose()
    jobs = await jobs_by_id(runtime)
    assert (jobs[orphan.id].status, jobs[orphan.id].lease_owner) == ("queued", None)
    assert jobs[writing.id].status == "succeeded"


async def test_a_claim_in_flight_keeps_its_jobs_while_an_older_orphan_is_handed_back(
    client: httpx.AsyncClient, signup: Any, runtime: Any
) -> None:
    """The beat may come while a claim's statement is out (its jobs are this worker's in
    the table but not yet in `running`): those are not orphans; one leased before the
    claim began is."""
    await queue_runs(client, signup, 3)
    worker = Worker(runtime, concurrency=4)
    [orphan] = await claimed_by(worker, 1)
    async with runtime.db.write() as session, session.begin():
        # Its lease was taken (or last renewed) a second before the claim below.
        await session.execute(
            update(Job)
            .where(Job.id == orphan.id)
            .values(lease_expires_at=utcnow() + worker.lease - timedelta(seconds=1))
        )
    request = worker.reserve(releases=False)
    assert request is not None
    async with runtime.db.one_statement() as connection:
        in_flight = await queue.take(connection, request)
    await worker._upkeep()  # before the claim's answer reached the worker
    await worker.http.aclose()
    jobs = await jobs_by_id(runtime)
    assert (jobs[orphan.id].status, jobs[orphan.id].lease_owner) == ("queued", None)
    assert len(in_flight) == 2
    assert {(jobs[job.id].status, jobs[job.id].lease_owner) for job in in_flight} == {
        ("running", worker.worker_id)
    }


async def test_a_claim_that_lands_while_the_beat_hands_back_orphans_keeps_its_jobs(
    client: httpx.AsyncClient, signup: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The beat decides which jobs are this worker's before it sends the hand-back, and
    a write's claim may go out and commit in between (the statement's round trips let
    the loop run): those jobs were claimed after the beat looked, so they are no
    orphans. Handed back, another worker would run them a second time."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only: on SQLite the beat's transaction holds the write lock")
    await queue_runs(client, signup, 2)
    worker = Worker(runtime, concurrency=3)  # one user may hold two of its slots
    landed: list[queue.Claimed] = []
    hand_back = queue.release

    async def claim_lands_first(session: Any, **bounds: Any) -> int:
        request = worker.reserve(releases=True)  # as the next write going out would
        assert request is not None
        async with runtime.db.one_statement() as connection:
            landed.extend(await queue.take(connection, request))
        return await hand_back(session, **bounds)

    monkeypatch.setattr(queue, "release", claim_lands_first)
    await worker._upkeep()
    await worker.http.aclose()
    jobs = await jobs_by_id(runtime)
    assert len(landed) == 2
    assert {(jobs[job.id].status, jobs[job.id].lease_owner) for job in landed} == {
        ("running", worker.worker_id)
    }


async def test_jobs_claimed_by_a_write_answered_during_shutdown_are_handed_back_unstarted(
    client: httpx.AsyncClient, signup: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a finished job's write is out carrying the next claim: shutdown
    waits for that write, then hands back what the worker holds. The claimed jobs must
    not start in between; started, they would run here while another worker, given them
    back, runs them again."""
    await queue_runs(client, signup, 3)
    worker = Worker(runtime, concurrency=3)
    [finishing] = await claimed_by(worker, 1)
    answer = asyncio.Event()
    write_and_claim = queue.write_and_claim

    async def answered_late(db: Any, **write: Any) -> Any:
        await answer.wait()
        return await write_and_claim(db, **write)

    started: list[str] = []
    run = worker.executor.run

    async def recorded(job: queue.Claimed) -> None:
        started.append(job.id)
        await run(job)

    monkeypatch.setattr(queue, "write_and_claim", answered_late)
    monkeypatch.setattr(worker.executor, "run", recorded)
    written = worker.executor.writer.submit(
        JobWrite(finishing.id, state=queue.succeeded({}, utcnow()))
    )
    await asyncio.sleep(0)  # the write goes out, with a claim for the free slots
    assert worker.claims
    worker.stopping = True  # SIGTERM: the loop has ended
    beats_done = asyncio.Event()
    heartbeat = asyncio.create_task(worker._heartbeat(beats_done))
    shutdown = asyncio.create_task(worker._shutdown(heartbeat, beats_done))
    await asyncio.sleep(0)
    answer.set()
    await shutdown
    assert await written
    jobs = await jobs_by_id(runtime)
    assert started == []
    assert jobs[finishing.id].status == "succeeded"
    others = [job for job in jobs.values() if job.id != finishing.id]
    assert {(job.status, job.lease_owner) for job in others} == {("queued", None)}


async def test_a_worker_told_to_stop_keeps_beating_while_its_jobs_finish(
    client: httpx.AsyncClient, signup: Any, settings: Settings, http_peer: Any
) -> None:
    """SIGTERM with a slow step out: the job may take up to the shutdown timeout to
    finish, and the worker must go on beating meanwhile. Silent, the others take it for
    dead after two and a half beats and run its job again while it still runs here."""
    account = await signup()
    http_peer.hold.add("/slow")
    step = {"id": "slow", "connector": "http_request", "params": {"url": f"{http_peer.url}/slow"}}
    created = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "w", "steps": [step]}},
    )
    job_id = (
        await client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
        )
    ).json()["job_id"]
    runtime = build_runtime(
        settings.model_copy(
            update={"allow_private_urls": ["127.0.0.1/32"], "worker_heartbeat_s": 0.2}
        )
    )
    worker = Worker(runtime, concurrency=2)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        assert await asyncio.to_thread(http_peer.arrived.wait, 30), "the step never went out"
        stop.set()  # SIGTERM, with the step still out
        told_at = utcnow()
        async with asyncio.timeout(10):  # a beat every 0.2 s, if it beats at all
            while await last_beat(runtime, worker.worker_id) <= told_at:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # Another worker's upkeep, looking for workers silent since the stop.
        async with runtime.db.session(write=True) as session, session.begin():
            recovered = await queue.recover_lost(
                session, now=utcnow(), silent_since=told_at, max_crashes=3
            )
        http_peer.release()
        await running
        async with runtime.db.read() as session:
            job = await session.get(Job, job_id)
    finally:
        http_peer.release()
        stop.set()
        await running
        await runtime.close()
    assert recovered == 0
    assert job is not None
    assert (job.status, job.crashes) == ("succeeded", 0)
    assert http_peer.paths() == ["/slow"]


async def last_beat(runtime: Any, worker_id: str) -> datetime:
    async with runtime.db.read() as session:
        beat = await session.scalar(
            select(WorkerBeat.heartbeat_at).where(WorkerBeat.id == worker_id)
        )
    return beat or datetime.min.replace(tzinfo=UTC)


async def test_a_burst_beyond_its_users_limit_is_claimed_along_with_the_writes_that_make_room(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
    """One user's burst, more runs than the user may run at once: each batch's final
    states go out with the claim of the next batch, one statement, not a claim that races
    the write and comes back empty, then another after it, then one for the last slot."""
    await queue_runs(client, signup, 40)
    runtime = build_runtime(settings.model_copy(update={"worker_poll_interval_s": 30}))
    statements = record_statements(runtime)
    worker = Worker(runtime, concurrency=10)  # one user holds at most 9 of its slots
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(20):  # a lost wake-up would wait for the 30 s poll
            while await succeeded_runs(runtime) < 40:  # noqa: ASYNC110  (the table, polled)
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
        await runtime.close()
    # Five batches of nine, and a claim or two at the end that finds the queue empty
    # (seven, on either back-end); claiming on its own, the worker made ten.
    claims = [sql for sql in statements if "UPDATE jobs SET status = 'running'" in sql]
    assert 5 <= len(claims) <= 8  # forty runs need five claims at least


async def succeeded_runs(runtime: Any) -> int:
    async with runtime.db.read() as session:
        return (
            await session.scalar(
                select(func.count()).select_from(Job).where(Job.status == "succeeded")
            )
            or 0
        )
