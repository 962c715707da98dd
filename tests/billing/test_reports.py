"""The operator's revenue and costs reports."""

from __future__ import annotations

import asyncio
import calendar
import json
import math
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.billing import plans, reports
from levqor.billing.models import LlmUsage, Payment, RevenueSnapshot
from levqor.cli import app as cli_app
from levqor.db.base import utcnow
from levqor.jobs.scheduler import Scheduler
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import make_admin, make_workflow, refund, start
from tests.stripe_kit import deliver, invoice_paid, pack_paid, subscription_started


async def a_small_business(client: httpx.AsyncClient, signup: Any, runtime: Runtime) -> Any:
    """A subscriber (Pro), a pack buyer refunded 1.00 of 10.00 through a partner's link,
    a user who only ran a workflow, and LLM spend: returns the admin."""
    admin, subscriber, partner, runner = [await signup() for _ in range(4)]
    await make_admin(runtime, admin)
    started = subscription_started(subscriber.id, "sub_1")
    await deliver(client, started)
    await deliver(client, invoice_paid(subscriber.id))
    code = (await client.post("/api/v1/partners", headers=partner.headers)).json()["code"]
    buyer = await signup(ref=code)
    await deliver(client, pack_paid(buyer.id))
    async with runtime.db.session(write=False) as session:
        pack = await session.scalar(select(Payment.id).where(Payment.user_id == buyer.id))
    assert (await refund(client, admin, str(pack), amount=100)).status_code == 201
    workflow_id = await make_workflow(client, runner, {"id": "a", "connector": "transform"})
    await start(client, runner, workflow_id)
    async with runtime.db.session(write=True) as session, session.begin():
        session.add(
            LlmUsage(
                user_id=runner.id,
                purpose="step",
                model="gpt-4o",
                prompt_tokens=1,
                completion_tokens=1,
                cost_micro_usd=1_234_567,
            )
        )
    return admin


async def test_revenue_counts_mrr_paying_users_the_funnel_and_commission(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin = await a_small_business(client, signup, runtime)
    answer = await client.get("/api/v1/admin/revenue", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["currency"] == "usd"
    assert (body["mrr_cents"], body["arr_cents"]) == (4900, 58_800)
    assert body["subscriptions_by_plan"] == {"pro": 1}
    assert body["paying_users"] == 2
    assert body["revenue_this_month_cents"] == 4900 + 1000 - 100
    assert body["refunded_this_month_cents"] == 100
    assert body["funnel"] == {"signups": 5, "activated": 1, "paying": 2, "subscribed": 1}
    # 20% of 10.00, less 20% of the 1.00 refunded; held 30 days.
    assert body["partner_commission_cents"] == {"pending": 180, "approved": 0, "paid": 0, "held": 0}


async def test_refunded_this_month_counts_refunds_made_this_month(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """A refund today of a payment made two months ago counts this month; before, the
    report summed the refunds of payments made this month, whenever refunded."""
    admin, buyer = await signup(), await signup()
    await make_admin(runtime, admin)
    await deliver(client, pack_paid(buyer.id))
    async with runtime.db.write() as session, session.begin():
        payment = await session.scalar(select(Payment).where(Payment.user_id == buyer.id))
        assert payment is not None
        payment.created_at = utcnow() - timedelta(days=62)
    assert (await refund(client, admin, payment.id, amount=300)).status_code == 201
    body = (await client.get("/api/v1/admin/revenue", headers=admin.headers)).json()
    assert body["refunded_this_month_cents"] == 300
    assert body["revenue_this_month_cents"] == 0


async def test_costs_add_up_stripe_fees_llm_and_infra(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin = await a_small_business(client, signup, runtime)
    answer = await client.get("/api/v1/admin/costs", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    fees = math.ceil((4900 + 1000) * 290 / 10_000) + 2 * 30
    now = utcnow()
    daily_infra = math.ceil(30_000 / calendar.monthrange(now.year, now.month)[1])
    assert body["this_month"] == {
        "stripe_cents": fees,
        "llm_cents": 124,
        "infra_cents": 30_000,
        "total_cents": fees + 124 + 30_000,
    }
    assert body["today"]["infra_cents"] == daily_infra
    assert body["llm_this_month_micro_usd"] == 1_234_567
    assert body["arpu_cents"] == (4900 + 1000 - 100) // 2
    assert body["break_even_users"] == math.ceil((fees + 124 + 30_000) / body["arpu_cents"])


async def test_reports_are_for_admins_and_costs_print_on_the_cli(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any, cli_env: Any
) -> None:
    user = await signup()
    for path in ("/api/v1/admin/revenue", "/api/v1/admin/costs"):
        assert_problem(await client.get(path, headers=user.headers), 403, "forbidden")
    runner = CliRunner()
    printed = await asyncio.to_thread(runner.invoke, cli_app, ["costs", "--json"])
    assert printed.exit_code == 0, printed.output
    report = json.loads(printed.output)
    assert report["this_month"]["total_cents"] == 0  # nothing sold, no infra set here
    assert report["break_even_users"] == 0
    table = await asyncio.to_thread(runner.invoke, cli_app, ["costs"])
    assert "Break-even: 0 paying users" in table.output


async def test_mrr_is_recorded_each_day_by_the_scheduler(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """A subscription row keeps only its latest state, so MRR over time is what the
    scheduler recorded day by day: earlier days stay as they were, today's is rewritten."""
    subscriber = await signup()
    yesterday = utcnow().date() - timedelta(days=1)
    async with runtime.db.session(write=True) as session, session.begin():
        session.add(RevenueSnapshot(day=yesterday, mrr_cents=500, subscriptions=1, paying_users=1))
    await Scheduler(runtime).tick(utcnow())  # no subscription yet: today's MRR is 0
    async with runtime.db.session(write=False) as session:
        ticked = await reports.mrr_history(session, days=1)
    assert [(each.day, each.mrr_cents) for each in ticked] == [(utcnow().date(), 0)]
    await deliver(client, subscription_started(subscriber.id, "sub_1"))
    record = reports.snapshot_task(runtime.db, every_s=0)
    await record()
    await record()  # the same day again: one row, the later figure
    async with runtime.db.session(write=False) as session:
        history = await reports.mrr_history(session, days=7)
    assert [(each.day, each.subscriptions) for each in history] == [
        (yesterday, 1),
        (utcnow().date(), 1),
    ]
    assert history[0].mrr_cents == 500
    assert history[1].mrr_cents == plans.PLANS["pro"].price_cents
