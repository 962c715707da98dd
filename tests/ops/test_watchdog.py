"""The watchdog: a stuck queue, a silent worker, failed runs, a spend pause and a failed
payout each reach the operator once, and a condition that clears says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update

from levqor.billing.models import SpendPause
from levqor.db.base import utcnow
from levqor.jobs.models import FAILED, Job, WorkerBeat
from levqor.jobs.scheduler import Scheduler
from levqor.ops import watchdog
from levqor.ops.models import Alert
from levqor.partners.models import Partner, Payout, Referral
from levqor.runtime import Runtime
from tests.factories import make_admin, make_workflow, start

TRANSFORM = {"id": "a", "connector": "transform", "params": {}}


async def queued_runs(
    client: httpx.AsyncClient, account: Any, runtime: Runtime, n: int
) -> list[str]:
    workflow = await make_workflow(client, account, TRANSFORM)
    ids = [(await start(client, account, workflow)).json()["job_id"] for _ in range(n)]
    return ids


async def stored(runtime: Runtime) -> list[Alert]:
    async with runtime.db.read() as session:
        return list(await session.scalars(select(Alert).order_by(Alert.created_at)))


async def test_a_stuck_queue_is_alerted_once_then_resolved(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    [job_id] = await queued_runs(client, await signup(), runtime, 1)
    settings = runtime.settings
    assert await watchdog.check(runtime.db, settings) == []  # a fresh job is no news
    async with runtime.db.write() as session, session.begin():
        await session.execute(
            update(Job).values(run_at=utcnow() - timedelta(seconds=settings.alert_queue_age_s + 60))
        )
    [raised] = await watchdog.check(runtime.db, settings)
    assert (raised.severity, raised.title, raised.key) == (
        "critical",
        "Runs are waiting too long",
        "queue_stuck",
    )
    assert "1 runs are waiting and 0 workers are alive" in raised.body
    assert await watchdog.check(runtime.db, settings) == []  # still stuck: counted
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))
    [moving] = await watchdog.check(runtime.db, settings)
    assert (moving.severity, moving.title) == ("resolved", "Runs are moving again")
    first = (await stored(runtime))[0]
    assert first.repeats == 1
    assert first.resolved_at is not None


async def test_failed_runs_are_summed_up_per_window(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    ids = await queued_runs(client, await signup(), runtime, 3)
    window = runtime.settings.alert_dead_letter_window_s
    now = datetime.fromtimestamp(utcnow().timestamp() // window * window, UTC) + timedelta(
        seconds=5
    )
    async with runtime.db.write() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(status=FAILED, finished_at=now - timedelta(seconds=window / 2))
        )
    [raised] = await watchdog.check(runtime.db, runtime.settings, now)
    assert (raised.severity, raised.title) == ("warning", "3 runs failed")
    assert "(3)" in raised.body
    assert "/app/dead-letters" in raised.body
    assert await watchdog.check(runtime.db, runtime.settings, now + timedelta(seconds=30)) == []
    later = now + timedelta(seconds=window)  # the next window had none
    assert await watchdog.check(runtime.db, runtime.settings, later) == []


async def test_a_silent_worker_is_alerted_and_its_return_resolves_it(runtime: Runtime) -> None:
    beat = timedelta(seconds=runtime.settings.worker_heartbeat_s * 3)
    async with runtime.db.write() as session, session.begin():
        session.add(
            WorkerBeat(
                id="wrk_gone",
                host="box-7",
                pid=4242,
                concurrency=8,
                heartbeat_at=utcnow() - beat * 2,
            )
        )
    [raised] = await watchdog.check(runtime.db, runtime.settings)
    assert raised.title == "Worker box-7:4242 went silent"
    assert raised.key == "worker_silent:wrk_gone"
    assert await watchdog.check(runtime.db, runtime.settings) == []
    async with runtime.db.write() as session, session.begin():
        await session.execute(delete(WorkerBeat))
    [gone] = await watchdog.check(runtime.db, runtime.settings)
    assert (gone.severity, gone.title) == ("resolved", "A silent worker is gone")


async def test_a_pause_failed_and_unsure_payouts_and_a_flagged_referral_are_alerted_once(
    signup: Any, runtime: Runtime
) -> None:
    user, referred = await signup(), await signup()
    async with runtime.db.write() as session, session.begin():
        session.add(
            SpendPause(
                user_id=user.id,
                spent_micro_usd=6_000_000,
                limit_micro_usd=5_000_000,
                until=utcnow() + timedelta(hours=3),
            )
        )
        session.add(
            Payout(
                partner_id="ptn_x",
                user_id=user.id,
                amount_cents=4200,
                currency="usd",
                status="failed",
                destination="acct_1",
                failure="No such destination: acct_1",
            )
        )
        for hours_ago in (2, 0):  # unsure for two hours, and one just sent
            session.add(
                Payout(
                    partner_id="ptn_y",
                    user_id=user.id,
                    amount_cents=1600,
                    currency="usd",
                    destination="acct_2",
                    created_at=utcnow() - timedelta(hours=hours_ago),
                )
            )
        partner = Partner(user_id=user.id, code="wcode", commission_bp=2000)
        session.add(partner)
        await session.flush()
        signal = {"name": "partner_ip", "weight": 60, "detail": "an IP the partner used"}
        session.add(
            Referral(
                user_id=referred.id,
                partner_id=partner.id,
                signals=[signal],
                score=60,
                status="flagged",
            )
        )
    raised = await watchdog.check(runtime.db, runtime.settings)
    assert sorted(alert.title for alert in raised) == [
        "A partner payout failed",
        "A partner payout is unsure",
        "A referral was flagged",
        "LLM spend paused",
    ]
    by_title = {alert.title: alert for alert in raised}
    assert "$6.00 spent today against a limit of $5.00" in by_title["LLM spend paused"].body
    assert "No such destination" in by_title["A partner payout failed"].body
    assert await watchdog.check(runtime.db, runtime.settings) == []


async def test_the_scheduler_runs_the_watchdog(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    await queued_runs(client, await signup(), runtime, 1)
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).values(run_at=utcnow() - timedelta(hours=1)))
    await Scheduler(runtime).tick(utcnow())
    keys = [alert.key for alert in await stored(runtime)]
    assert keys.count("queue_stuck") == 1


async def test_admins_see_the_queue_and_every_worker(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    admin = await signup()
    await queued_runs(client, admin, runtime, 2)
    async with runtime.db.write() as session, session.begin():
        session.add(WorkerBeat(id="wrk_a", host="h1", pid=1, concurrency=4, heartbeat_at=utcnow()))
        session.add(
            WorkerBeat(
                id="wrk_b",
                host="h2",
                pid=2,
                concurrency=4,
                heartbeat_at=utcnow() - timedelta(hours=1),
            )
        )
    assert (await client.get("/api/v1/admin/queue", headers=admin.headers)).status_code == 403
    await make_admin(runtime, admin)
    body = (await client.get("/api/v1/admin/queue", headers=admin.headers)).json()
    assert body["by_status"] == {"queued": 2}
    assert body["dead_letters"] == 0
    assert body["oldest_waiting_s"] >= 0
    assert [(w["id"], w["alive"]) for w in body["workers"]] == [("wrk_a", True), ("wrk_b", False)]
