"""The operator's dashboard: admins only; revenue, costs and runs as SVG charts with their
numbers; the queue; lifting the spend guard's pause."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy import select

from levqor.accounts.models import User
from levqor.billing import spend_guard
from levqor.billing.models import LlmUsage, Payment, SpendPause
from levqor.db.base import utcnow
from levqor.jobs.scheduler import Scheduler
from levqor.ops import alerts, backups
from levqor.partners.models import Partner, Referral
from levqor.runtime import Runtime
from tests.factories import TRANSFORM, make_admin, signed_in
from tests.factories import save_page_workflow as save


class Account:
    def __init__(self, user_id: str) -> None:
        self.id = user_id


async def admin_session(client: httpx.AsyncClient, runtime: Runtime, email: str) -> str:
    token = await signed_in(client, email)
    me = (await client.get("/app")).text
    assert email in me
    async with runtime.db.read() as session:
        users = (await session.scalars(select(User))).all()
    [user] = [each for each in users if each.email == email]
    await make_admin(runtime, Account(user.id))
    return token


def chart_values(page: str, chart_id: str) -> list[float]:
    figure = page.split(f'id="{chart_id}-title"')[1].split("</figure>")[0]
    rows = re.findall(r"<tr><td>[\d-]+</td><td>([\d.]+)</td></tr>", figure)
    return [float(value) for value in rows]


async def test_only_admins_see_operations(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin")).status_code == 303  # a visitor: log in first
    await signed_in(client, "plain@example.com")
    assert (await client.get("/admin")).status_code == 403
    assert "Operations" not in (await client.get("/app")).text


async def test_the_charts_carry_todays_money_and_runs(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await admin_session(client, runtime, "boss@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    for _ in range(3):
        await client.post(f"{workflow}/runs", data={"csrf_token": token})
    async with runtime.db.write() as session, session.begin():
        [payer] = (await session.scalars(select(User))).all()
        session.add(
            Payment(
                user_id=payer.id,
                kind="pack",
                product="small",
                amount_cents=1250,
                currency="usd",
                credits=100,
            )
        )
    page = await client.get("/admin")
    assert page.status_code == 200
    revenue = chart_values(page.text, "revenue-chart")
    runs = chart_values(page.text, "runs-chart")
    costs = chart_values(page.text, "costs-chart")
    assert len(revenue) == len(runs) == len(costs) == 30
    assert revenue[-1] == 12.5
    assert sum(revenue[:-1]) == 0
    assert runs[-1] == 3
    assert costs[-1] > costs[0]  # today's Stripe fee on top of the infra share
    assert '<p class="price" data-queue="queued">3</p>' in page.text
    assert page.text.count("<rect ") == 90
    assert "no day is recorded yet" in page.text  # MRR over time starts with the scheduler
    await Scheduler(runtime).tick(utcnow())
    page = await client.get("/admin")
    assert chart_values(page.text, "mrr-chart") == [0.0]
    assert f"MRR recorded each day since {utcnow().date().isoformat()}" in page.text


async def test_lifting_the_servers_llm_pause(client: httpx.AsyncClient, runtime: Runtime) -> None:
    token = await admin_session(client, runtime, "ops@example.com")
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    async with runtime.db.write() as session, session.begin():
        session.add(
            SpendPause(
                user_id=None, spent_micro_usd=10, limit_micro_usd=5, until=start + timedelta(days=1)
            )
        )
    page = await client.get("/admin")
    assert "paused for everyone" in page.text
    lifted = await client.post("/admin/spend-guard/resume", data={"csrf_token": token})
    assert lifted.status_code == 303
    assert "paused for everyone" not in (await client.get("/admin")).text
    refused = await client.post("/admin/spend-guard/resume", data={})
    assert refused.status_code == 403


async def test_lifting_one_users_llm_pause(client: httpx.AsyncClient, runtime: Runtime) -> None:
    token = await admin_session(client, runtime, "lift@example.com")
    until = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    async with runtime.db.write() as session, session.begin():
        [user] = (await session.scalars(select(User))).all()
        session.add(
            LlmUsage(
                user_id=user.id,
                purpose="step",
                model="m",
                prompt_tokens=1,
                completion_tokens=1,
                cost_micro_usd=9,
            )
        )
        session.add(SpendPause(user_id=user.id, spent_micro_usd=9, limit_micro_usd=5, until=until))
    page = (await client.get("/admin")).text
    assert f'name="user_id" value="{user.id}"' in page
    lifted = await client.post(
        "/admin/spend-guard/resume", data={"csrf_token": token, "user_id": user.id}
    )
    assert lifted.status_code == 303
    async with runtime.db.read() as session:
        assert not await spend_guard.paused(session, user_id=user.id)
    assert f'name="user_id" value="{user.id}"' not in (await client.get("/admin")).text


async def test_alerts_are_listed_with_each_channels_outcome(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await admin_session(client, runtime, "alerts@example.com")
    page = (await client.get("/admin")).text
    assert "No alert channel is configured" in page
    await alerts.alert(
        runtime.db, runtime.settings, "critical", "Runs are waiting too long", "9 min"
    )
    page = (await client.get("/admin")).text
    assert "<strong>Runs are waiting too long</strong>" in page
    assert "<td>critical</td>" in page


async def test_slo_anomalies_and_backups_are_shown(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await admin_session(client, runtime, "ops-pages@example.com")
    page = (await client.get("/admin")).text
    assert "No backup yet" in page
    assert "No anomaly found." in page
    taken = await backups.run(runtime.db, runtime.settings)
    await backups.verify(runtime.db, runtime.settings, taken.id)
    page = (await client.get("/admin")).text
    assert f"<td>{taken.id}</td>" in page
    assert '<h3>State</h3><p class="price ok">ok</p>' in page


async def test_the_audit_log_filters_by_who_and_what(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await admin_session(client, runtime, "auditor@example.com")
    everything = (await client.get("/admin")).text
    assert "<td>signup</td>" in everything
    only_roles = (await client.get("/admin?action=role_changed")).text
    audit = only_roles.split('id="audit"')[1]
    assert "<td>signup</td>" not in audit
    assert 'value="role_changed"' in audit  # the filter stays in its box


async def test_refunds_and_payouts_are_listed_and_payouts_can_be_run(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await admin_session(client, runtime, "payer@example.com")
    page = (await client.get("/admin")).text
    assert "No refund." in page
    assert "No payout yet." in page
    ran = await client.post("/admin/payouts/run", data={"csrf_token": token})
    assert (ran.status_code, ran.headers["location"]) == (303, "/admin#payouts")


async def test_a_flagged_referral_is_approved_or_rejected_from_the_page(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await admin_session(client, runtime, "judge@example.com")
    async with runtime.db.write() as session, session.begin():
        partner_user, *referred = [
            User(email=f"{name}@example.com", email_index=name, password_hash="x")
            for name in ("owner", "fishy", "fishier")
        ]
        session.add_all([partner_user, *referred])
        await session.flush()
        partner = Partner(user_id=partner_user.id, code="pcode", commission_bp=2000)
        session.add(partner)
        await session.flush()
        signal = {"name": "disposable_email", "weight": 50, "detail": "mailinator.com"}
        for user in referred:
            session.add(
                Referral(
                    user_id=user.id,
                    partner_id=partner.id,
                    signals=[signal],
                    score=50,
                    status="flagged",
                )
            )
    page = (await client.get("/admin")).text
    section = page.split('id="referrals"')[1].split("<h2")[0]
    assert "disposable_email (50): mailinator.com" in section
    approve, reject = referred[0].id, referred[1].id
    done = await client.post(f"/admin/referrals/{approve}/approve", data={"csrf_token": token})
    assert (done.status_code, done.headers["location"]) == (303, "/admin#referrals")
    await client.post(f"/admin/referrals/{reject}/reject", data={"csrf_token": token})
    again = await client.post(f"/admin/referrals/{reject}/approve", data={"csrf_token": token})
    assert again.status_code == 303  # decided already: nothing changes
    refused = await client.post(f"/admin/referrals/{approve}/reject", data={})
    assert refused.status_code == 403
    async with runtime.db.read() as session:
        statuses = {
            referral.user_id: referral.status
            for referral in (await session.scalars(select(Referral))).all()
        }
    assert statuses == {approve: "approved", reject: "rejected"}
    page = (await client.get("/admin")).text
    assert "No referral is waiting for a decision." in page
