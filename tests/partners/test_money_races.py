"""Payouts under races and ambiguous failures: every cent owed is sent exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from levqor.db.base import utcnow
from levqor.partners import service as partners
from levqor.partners.models import Commission, Payout
from levqor.runtime import Runtime
from tests.factories import make_admin
from tests.partners.test_program import figures, join
from tests.stripe_kit import deliver, pack_paid


async def owed_partner(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any, *, account: str
) -> Any:
    """A partner owed 1,600 cents (20% of an 80 dollar sale), payable now."""
    partner = await signup()
    code = (await join(client, partner, stripe_peer, account))["code"]
    customer = await signup(ref=code)
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    return partner


async def waiting_on_locks(runtime: Runtime) -> int:
    async with runtime.db.read_engine.connect() as connection:
        found = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(found or 0)


async def test_two_payout_runs_at_once_send_one_transfer_per_partner(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """Both runs read what is owed while a third transaction holds the commission rows,
    so both have read before either claims: the race, made certain. (Before: the second
    run made a payout of the same sum with no commissions, and paid it too.)"""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite's writers are serial")
    await owed_partner(client, signup, stripe_peer, account="acct_one")
    await owed_partner(client, signup, stripe_peer, account="acct_two")
    async with runtime.db.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(text("SELECT id FROM commissions FOR UPDATE"))
        runs = [
            asyncio.create_task(partners.run_payouts(runtime, actor=actor))
            for actor in ("cli", "admin-api")
        ]
        async with asyncio.timeout(20):
            waiting = 0
            while waiting < 2:  # both runs blocked: one on the rows, one on its lock
                waiting = await waiting_on_locks(runtime)
        await transaction.commit()
    done = await asyncio.gather(*runs)
    assert sorted(len(payouts) for payouts in done) == [0, 2]
    transfers = [r for r in stripe_peer.requests if r["path"] == "/v1/transfers"]
    assert sorted(cast_form(r)["destination"] for r in transfers) == ["acct_one", "acct_two"]
    async with runtime.db.read() as session:
        payouts = (await session.scalars(select(Payout))).all()
        unclaimed = (
            await session.scalars(select(Commission).where(Commission.payout_id.is_(None)))
        ).all()
    assert sorted(p.amount_cents for p in payouts) == [1600, 1600]
    assert unclaimed == []


def cast_form(request: dict[str, object]) -> dict[str, str]:
    form = request["form"]
    assert isinstance(form, dict)
    return form


UNSURE = {"error": {"type": "api_error", "message": "An unknown error occurred"}}


async def payout_run(client: httpx.AsyncClient, admin: Any) -> list[dict[str, Any]]:
    answer = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    payouts: list[dict[str, Any]] = answer.json()["payouts"]
    return payouts


async def kept_payout(runtime: Runtime) -> Payout:
    async with runtime.db.read() as session:
        [kept] = (await session.scalars(select(Payout))).all()
        claimed = (await session.scalars(select(Commission))).all()
    assert (kept.status, kept.amount_cents) == ("processing", 1600)
    assert {commission.payout_id for commission in claimed} == {kept.id}
    return kept


async def age_payouts(runtime: Runtime, hours: int) -> None:
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Payout).values(created_at=utcnow() - timedelta(hours=hours)))


async def test_a_500_keeps_the_payout_and_after_a_day_a_lookup_decides_before_resending(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """Stripe saves a 500 under its key and answers every retry with it for 24 hours: the
    payout stays `processing` with its commissions (before: it failed, the commissions
    were freed and the next run paid them under a new key). Once the key may be gone,
    the transfer group is searched first; found nothing, it is sent again."""
    admin = await signup()
    await make_admin(runtime, admin)
    partner = await owed_partner(client, signup, stripe_peer, account="acct_partner1")
    stripe_peer.reply(500, UNSURE)
    assert await payout_run(client, admin) == []
    assert await payout_run(client, admin) == []  # the same key: the saved 500 again
    kept = await kept_payout(runtime)
    sent = stripe_peer.executed("/v1/transfers")
    assert len(sent) == 1
    assert [
        r["headers"]["idempotency-key"]
        for r in stripe_peer.requests
        if r["path"] == "/v1/transfers"
    ] == [kept.id] * 6

    await age_payouts(runtime, 25)
    stripe_peer.prune_keys()
    stripe_peer.route(
        "GET", "/v1/transfers", 200, {"object": "list", "data": [], "has_more": False}
    )
    [paid] = await payout_run(client, admin)
    assert (paid["id"], paid["status"], paid["amount_cents"]) == (kept.id, "paid", 1600)
    lookups = [r["path"] for r in stripe_peer.requests if r["method"] == "GET"]
    assert lookups == [f"/v1/transfers?transfer_group={kept.id}&limit=1"]
    assert len(stripe_peer.executed("/v1/transfers")) == 2  # the 500, then the transfer
    seen = await figures(client, partner)
    assert seen["commission_cents"] == {"pending": 0, "approved": 0, "paid": 1600, "held": 0}


async def test_a_transfer_found_by_its_group_after_a_day_is_not_sent_again(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin = await signup()
    await make_admin(runtime, admin)
    await owed_partner(client, signup, stripe_peer, account="acct_partner1")
    stripe_peer.reply(500, UNSURE)
    assert await payout_run(client, admin) == []
    kept = await kept_payout(runtime)
    await age_payouts(runtime, 30)
    stripe_peer.prune_keys()
    found = {"id": "tr_made", "object": "transfer", "transfer_group": kept.id}
    stripe_peer.route("GET", "/v1/transfers", 200, {"object": "list", "data": [found]})
    [paid] = await payout_run(client, admin)
    assert (paid["status"], paid["transfer_id"]) == ("paid", "tr_made")
    assert len(stripe_peer.executed("/v1/transfers")) == 1  # only the first, unsure one


async def test_a_transfer_that_timed_out_after_stripe_made_it_is_paid_once(
    client: httpx.AsyncClient,
    signup: Any,
    stripe_peer: Any,
    runtime: Runtime,
) -> None:
    """The peer makes the transfer, then answers too late for the client (every try):
    the payout stays `processing`; the next run's retry under the same key gets the
    saved transfer back, and Stripe made one."""
    admin = await signup()
    await make_admin(runtime, admin)
    await owed_partner(client, signup, stripe_peer, account="acct_partner1")
    stripe_peer.hold.add("/v1/transfers")
    assert await payout_run(client, admin) == []
    kept = await kept_payout(runtime)
    stripe_peer.release()
    [paid] = await payout_run(client, admin)
    assert (paid["id"], paid["status"], paid["transfer_id"]) == (kept.id, "paid", "tr_test_1")
    assert len(stripe_peer.executed("/v1/transfers")) == 1
    keys = {
        r["headers"]["idempotency-key"]
        for r in stripe_peer.requests
        if r["path"] == "/v1/transfers"
    }
    assert keys == {kept.id}


async def test_the_scheduler_pays_partners_on_the_payout_day_once_a_month(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    from levqor.jobs.scheduler import Scheduler

    admin = await signup()
    await make_admin(runtime, admin)
    await owed_partner(client, signup, stripe_peer, account="acct_partner1")
    fifteenth = utcnow().replace(day=15)
    payday = runtime.settings.model_copy(update={"partner_payout_day": 15})
    not_today = fifteenth.replace(day=14)
    assert (
        await partners.scheduled_payouts(runtime.db, runtime.stripe, payday, now=not_today) is None
    )
    paid = await partners.scheduled_payouts(runtime.db, runtime.stripe, payday, now=fifteenth)
    assert [(p.status, p.amount_cents) for p in paid or []] == [("paid", 1600)]
    await owed_partner(client, signup, stripe_peer, account="acct_partner2")
    assert (
        await partners.scheduled_payouts(runtime.db, runtime.stripe, payday, now=fifteenth) is None
    )
    log = await client.get(
        "/api/v1/admin/audit", headers=admin.headers, params={"action": "payouts_run"}
    )
    [run] = log.json()["data"]
    assert (run["actor"], run["detail"]["paid"], run["detail"]["paid_cents"]) == (
        "scheduler",
        1,
        1600,
    )
    await Scheduler(runtime).tick(utcnow())  # the hourly task: no second run this month
    assert len(stripe_peer.executed("/v1/transfers")) == 1
