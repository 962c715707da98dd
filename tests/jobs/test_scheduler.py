"""Cron schedules: each fire time runs exactly once, however many schedulers run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from levqor.accounts.models import User
from levqor.db.base import utcnow
from levqor.jobs.models import Job, ScheduleFire
from levqor.jobs.scheduler import Scheduler, latest_fire
from levqor.runtime import Runtime
from levqor.workflows.models import WorkflowVersion


async def scheduled(client: httpx.AsyncClient, account: Any, cron: str, tz: str = "UTC") -> str:
    definition = {
        "name": "cron",
        "trigger": {"type": "schedule", "cron": cron, "timezone": tz},
        "steps": [{"id": "a", "connector": "transform", "params": {}}],
    }
    response = await client.post(
        "/api/v1/workflows", json={"definition": definition}, headers=account.headers
    )
    workflow_id: str = response.json()["id"]
    return workflow_id


async def count(runtime: Runtime, model: Any = Job) -> int:
    async with runtime.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def next_five_minutes(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=5 - now.minute % 5)


async def test_two_schedulers_fire_each_time_exactly_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    await scheduled(client, account, "*/5 * * * *")
    first_fire = next_five_minutes(utcnow())
    one, two = Scheduler(runtime), Scheduler(runtime)
    for moment in (
        first_fire + timedelta(seconds=1),
        first_fire + timedelta(minutes=1),
        first_fire + timedelta(minutes=5, seconds=2),
    ):
        started = await asyncio.gather(
            one.tick(moment), two.tick(moment), one.tick(moment), two.tick(moment)
        )
        assert sum(len(batch) for batch in started) <= 1
    assert await count(runtime) == 2  # two fire times, one run each
    async with runtime.db.read() as session:
        inputs = sorted(job.input["scheduled_for"] for job in await session.scalars(select(Job)))
    assert inputs == [first_fire.isoformat(), (first_fire + timedelta(minutes=5)).isoformat()]


async def test_downtime_runs_once_not_a_storm(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    await scheduled(client, account, "* * * * *")
    # Both ticks in the same minute: thousands of fire times were missed, one runs.
    three_days_later = (utcnow() + timedelta(days=3)).replace(second=1, microsecond=0)
    assert len(await Scheduler(runtime).tick(three_days_later)) == 1
    assert len(await Scheduler(runtime).tick(three_days_later + timedelta(seconds=30))) == 0
    assert await count(runtime) == 1


async def test_fire_times_before_the_workflow_existed_are_not_due(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    await scheduled(client, account, "0 0 1 1 *")  # once a year, last fired in the past
    assert await Scheduler(runtime).tick(utcnow() + timedelta(seconds=5)) == []
    assert await count(runtime) == 0


def test_fire_times_follow_the_time_zone() -> None:
    now = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)  # Paris is UTC+1 in November
    assert latest_fire("0 9 * * *", "Europe/Paris", now) == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert latest_fire("0 9 * * *", "UTC", now) == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # UTC+2 in July
    assert latest_fire("0 9 * * *", "Europe/Paris", summer) == datetime(
        2026, 7, 1, 7, 0, tzinfo=UTC
    )


async def test_no_credits_skips_the_fire_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    await scheduled(client, account, "* * * * *")
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(User).values(credits=0))
    later = utcnow() + timedelta(minutes=2)
    assert await Scheduler(runtime).tick(later) == []
    assert await Scheduler(runtime).tick(later) == []
    async with runtime.db.read() as session:
        outcomes = list(await session.scalars(select(ScheduleFire.outcome)))
    assert outcomes == ["skipped_no_credits"]
    assert await count(runtime) == 0


async def test_deleted_or_unscheduled_workflows_do_not_fire(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await scheduled(client, account, "* * * * *")
    await client.delete(f"/api/v1/workflows/{workflow_id}", headers=account.headers)
    assert await Scheduler(runtime).tick(utcnow() + timedelta(minutes=2)) == []


async def test_upkeep_deletes_old_finished_jobs_only(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await scheduled(client, account, "* * * * *")
    for _ in range(3):
        await client.post(f"/api/v1/workflows/{workflow_id}/runs", json={}, headers=account.headers)
    async with runtime.db.write() as session, session.begin():
        ids = list(await session.scalars(select(Job.id)))
        await session.execute(
            update(Job)
            .where(Job.id == ids[0])
            .values(status="succeeded", finished_at=utcnow() - timedelta(days=40))
        )
        await session.execute(
            update(Job)
            .where(Job.id == ids[1])
            .values(status="failed", finished_at=utcnow() - timedelta(days=1))
        )
    counts = await Scheduler(runtime).upkeep(utcnow())
    assert counts["jobs"] == 1
    async with runtime.db.read() as session:
        left = set(await session.scalars(select(Job.id)))
    assert left == {ids[1], ids[2]}


async def test_one_scheduler_leads_and_another_takes_over_when_it_goes(
    runtime: Runtime,
) -> None:
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only: on SQLite every scheduler ticks")
    first, second = Scheduler(runtime), Scheduler(runtime)
    try:
        assert await first.leads()
        assert not await second.leads()
        assert await first.leads()  # still leading, no second lock taken
        await first._resign()  # the leader stops (or its connection dies)
        assert await second.leads()
        assert not await first.leads()
    finally:
        await first._resign()
        await second._resign()


async def test_a_broken_schedule_stops_only_itself_and_pauses(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, settings: Any
) -> None:
    """A cron saved before it was refused at the door (`0 0 30 2 *` never fires, so every
    tick's fire-time lookup raises) counts against its own workflow only."""
    account, neighbour = await signup(), await signup()
    broken = await scheduled(client, account, "0 9 * * 1")
    async with runtime.db.write() as session, session.begin():
        version = await session.scalar(
            select(WorkflowVersion).where(WorkflowVersion.workflow_id == broken)
        )
        assert version is not None
        version.definition = {
            **version.definition,
            "trigger": {"type": "schedule", "cron": "0 0 30 2 *", "timezone": "UTC"},
        }
    healthy = await scheduled(client, neighbour, "* * * * *")
    pause_after = settings.schedule_pause_after_failures
    minute = (utcnow() + timedelta(minutes=1)).replace(second=1, microsecond=0)
    for tick in range(pause_after + 1):
        started = await Scheduler(runtime).tick(minute + timedelta(minutes=tick))
        assert len(started) == 1  # the neighbour's schedule fires every minute regardless

    async with runtime.db.read() as session:
        workflows = [job.workflow_id for job in await session.scalars(select(Job))]
    assert workflows == [healthy] * (pause_after + 1)
    read = (await client.get(f"/api/v1/workflows/{broken}", headers=account.headers)).json()
    assert read["schedule"]["paused"] is True
    assert read["schedule"]["failures_in_a_row"] == pause_after
    assert "CroniterBadDateError" in read["schedule"]["paused_reason"]
    assert (await client.get(f"/api/v1/workflows/{healthy}", headers=neighbour.headers)).json()[
        "schedule"
    ] == {"enabled": True, "paused": False, "paused_reason": None, "failures_in_a_row": 0}

    # Saving a version that fires resumes the schedule.
    fixed = {**read["definition"], "trigger": {"type": "schedule", "cron": "* * * * *"}}
    resumed = await client.put(
        f"/api/v1/workflows/{broken}", json={"definition": fixed}, headers=account.headers
    )
    assert resumed.json()["schedule"]["paused"] is False
    later = minute + timedelta(minutes=pause_after + 2)
    assert len(await Scheduler(runtime).tick(later)) == 2


async def test_the_owner_turns_a_schedule_off_and_on(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account, other = await signup(), await signup()
    workflow = await scheduled(client, account, "* * * * *")
    minute = (utcnow() + timedelta(minutes=1)).replace(second=1, microsecond=0)
    switch = f"/api/v1/workflows/{workflow}/schedule"
    off = await client.put(switch, json={"enabled": False}, headers=account.headers)
    assert off.status_code == 200
    assert off.json()["schedule"]["enabled"] is False
    assert await Scheduler(runtime).tick(minute) == []
    # A new version keeps the owner's switch as it is (unlike the automatic pause).
    definition = off.json()["definition"]
    saved = await client.put(
        f"/api/v1/workflows/{workflow}", json={"definition": definition}, headers=account.headers
    )
    assert saved.json()["schedule"]["enabled"] is False
    assert await Scheduler(runtime).tick(minute + timedelta(minutes=1)) == []
    stranger = await client.put(switch, json={"enabled": True}, headers=other.headers)
    assert stranger.status_code == 404
    on = await client.put(switch, json={"enabled": True}, headers=account.headers)
    assert on.json()["schedule"]["enabled"] is True
    assert len(await Scheduler(runtime).tick(minute + timedelta(minutes=2))) == 1
    assert await count(runtime) == 1


async def test_only_a_scheduled_workflow_has_a_switch(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    definition = {"name": "m", "steps": [{"id": "a", "connector": "transform", "params": {}}]}
    created = await client.post(
        "/api/v1/workflows", json={"definition": definition}, headers=account.headers
    )
    answer = await client.put(
        f"/api/v1/workflows/{created.json()['id']}/schedule",
        json={"enabled": False},
        headers=account.headers,
    )
    assert answer.status_code == 409
    assert answer.json()["code"] == "conflict"


async def test_a_cron_that_never_fires_is_refused_at_save(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    definition = {
        "name": "never",
        "trigger": {"type": "schedule", "cron": "0 0 30 2 *"},
        "steps": [{"id": "a", "connector": "transform", "params": {}}],
    }
    response = await client.post(
        "/api/v1/workflows", json={"definition": definition}, headers=account.headers
    )
    assert response.status_code == 422
    assert "never fires" in response.text
