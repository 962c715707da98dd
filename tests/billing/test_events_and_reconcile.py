"""Stripe events beyond the happy path, and reconciliation of the ones never delivered."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.billing.models import Payment, Refund, Subscription
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs.scheduler import Scheduler
from levqor.runtime import Runtime
from tests.factories import mail_settings, make_admin, refund
from tests.partners.test_program import figures, join
from tests.stripe_kit import (
    deliver,
    event,
    invoice_paid,
    pack_paid,
    stripe_settings,
    subscription_started,
)


@pytest.fixture
def settings(
    make_settings: Any, fresh_database: None, stripe_peer: Any, smtp_peer: Any
) -> Settings:
    return stripe_settings(
        make_settings, stripe_peer, partner_hold_days=0, **mail_settings(smtp_peer)
    )


async def credits(client: httpx.AsyncClient, account: Any) -> int:
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    return int(me["credits"])


async def test_a_failed_invoice_grants_nothing_marks_past_due_and_emails_the_customer(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: Any
) -> None:
    account = await signup()
    await deliver(client, subscription_started(account.id, "sub_1"))
    failed = invoice_paid(account.id, amount=4900)
    failed["type"] = "invoice.payment_failed"
    failed["data"]["object"]["amount_paid"] = 0
    assert (await deliver(client, failed)).status_code == 200
    assert (await deliver(client, failed)).json()["duplicate"] is True
    assert await credits(client, account) == 50
    async with runtime.db.read() as session:
        subscription = await session.get(Subscription, "sub_1")
    assert subscription is not None
    assert subscription.status == "past_due"
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["plan"] == "pro"  # kept while Stripe retries the card
    [sent] = smtp_peer.messages  # once, though delivered twice
    assert sent["to"] == [account.email]
    assert "did not go through" in sent["message"]["Subject"]
    assert "/app/billing" in sent["message"].get_payload()


async def test_a_refund_stripe_fails_later_gives_back_credits_and_commission(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    partner, admin = await signup(), await signup()
    await make_admin(runtime, admin)
    code = (await join(client, partner))["code"]
    buyer = await signup(ref=code)
    await deliver(client, pack_paid(buyer.id, pack="credits_10k", amount=8000))
    async with runtime.db.read() as session:
        payment = await session.scalar(select(Payment).where(Payment.user_id == buyer.id))
    assert payment is not None
    assert (await refund(client, admin, payment.id, amount=4000)).status_code == 201
    assert await credits(client, buyer) == 50 + 5_000
    assert (await figures(client, partner))["commission_cents"]["approved"] == 800

    failed = event(
        "refund.failed",
        {"id": "re_test_1", "object": "refund", "amount": 4000, "status": "failed"},
    )
    assert (await deliver(client, failed)).status_code == 200
    again = event(
        "refund.updated",
        {"id": "re_test_1", "object": "refund", "amount": 4000, "status": "failed"},
    )
    assert (await deliver(client, again)).status_code == 200  # undone once
    assert await credits(client, buyer) == 50 + 10_000
    assert (await figures(client, partner))["commission_cents"]["approved"] == 1600
    async with runtime.db.read() as session:
        undone = await session.get(Refund, "re_test_1")
        kept = await session.get(Payment, payment.id)
    assert undone is not None
    assert kept is not None
    assert (undone.status, kept.refunded_cents, kept.status) == ("failed", 0, "succeeded")


async def test_a_delayed_payment_grants_when_it_succeeds_and_only_then(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    pending = pack_paid(account.id)
    pending["data"]["object"]["payment_status"] = "unpaid"
    await deliver(client, pending)
    assert await credits(client, account) == 50
    succeeded = json.loads(json.dumps(pending))
    succeeded["id"] = "evt_async_ok"
    succeeded["type"] = "checkout.session.async_payment_succeeded"
    succeeded["data"]["object"]["payment_status"] = "paid"
    await deliver(client, succeeded)
    assert await credits(client, account) == 50 + 1_000
    paid_again = json.loads(json.dumps(succeeded))
    paid_again["id"] = "evt_completed_paid_too"
    paid_again["type"] = "checkout.session.completed"
    await deliver(client, paid_again)
    assert await credits(client, account) == 50 + 1_000

    other = await signup()
    failing = pack_paid(other.id)
    failing["type"] = "checkout.session.async_payment_failed"
    failing["data"]["object"]["payment_status"] = "unpaid"
    assert (await deliver(client, failing)).status_code == 200
    assert await credits(client, other) == 50


def events_page(*found: dict[str, Any]) -> dict[str, Any]:
    return {"object": "list", "url": "/v1/events", "has_more": False, "data": list(found)}


async def test_an_event_the_webhook_never_delivered_is_applied_once_by_reconcile(
    client: httpx.AsyncClient,
    signup: Any,
    runtime: Runtime,
    stripe_peer: Any,
    cli_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await signup()
    delivered, missed = (
        pack_paid(account.id),
        pack_paid(account.id, pack="credits_10k", amount=8000),
    )
    await deliver(client, delivered)
    for found in (delivered, missed):
        found["created"] = int(utcnow().timestamp()) - 60
    stripe_peer.route("GET", "/v1/events", 200, events_page(missed, delivered))
    for name, value in {
        "STRIPE_SECRET_KEY": "sk_test_cli",
        "STRIPE_API_BASE": stripe_peer.url,
    }.items():
        monkeypatch.setenv(f"LEVQOR_{name}", value)
    runner = CliRunner()
    since = (utcnow() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    shown = await asyncio.to_thread(
        runner.invoke, cli_app, ["billing", "reconcile", "--since", since, "--json"]
    )
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert (report["seen"], report["applied"]) == (2, [missed["id"]])
    assert await credits(client, account) == 50 + 1_000 + 10_000
    [listed] = [r for r in stripe_peer.requests if r["method"] == "GET"]
    query = parse_qs(urlsplit(str(listed["path"])).query)
    types = {value for key, values in query.items() if key.startswith("types[") for value in values}
    assert {"checkout.session.completed", "invoice.paid", "refund.updated"} <= types
    assert int(query["created[gte]"][0]) <= int(utcnow().timestamp()) - 2 * 86_400 + 5

    # The scheduler's hourly run finds both applied: nothing changes, and it is audited.
    await Scheduler(runtime).tick(utcnow())
    assert await credits(client, account) == 50 + 1_000 + 10_000
    admin = await signup()
    await make_admin(runtime, admin)
    log = await client.get(
        "/api/v1/admin/audit", headers=admin.headers, params={"action": "billing_reconciled"}
    )
    runs = log.json()["data"]
    assert [(run["actor"], run["detail"]["applied"]) for run in runs] == [
        ("system", 0),
        ("cli", 1),
    ]
