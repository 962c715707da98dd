"""Plans, Stripe Checkout, and Stripe's webhook events: credits arrive once per payment."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from levqor.billing.models import Invoice, Payment, StripeCustomer, Subscription
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, assert_problem, serve_app
from tests.factories import make_workflow, start
from tests.stripe_kit import (
    deliver,
    event,
    invoice_paid,
    pack_paid,
    signature,
    subscription_started,
)


async def me(client: httpx.AsyncClient, account: Any) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/api/v1/me", headers=account.headers)).json()
    return body


async def ledger(client: httpx.AsyncClient, account: Any) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/billing/ledger", headers=account.headers)
    entries: list[dict[str, Any]] = answer.json()["data"]
    return entries


async def test_plans_and_packs_are_public_with_prices_in_cents(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/billing/plans")
    assert answer.status_code == 200
    body = answer.json()
    pro = next(plan for plan in body["plans"] if plan["name"] == "pro")
    assert pro == {
        "name": "pro",
        "title": "Pro",
        "price_cents": 4900,
        "currency": "usd",
        "interval": "month",
        "credits_per_month": 10_000,
    }
    assert {pack["name"] for pack in body["packs"]} == {"credits_1k", "credits_10k"}


async def test_checkout_creates_the_customer_once_and_a_session_per_purchase(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any, runtime: Runtime
) -> None:
    account = await signup()
    first = await client.post(
        "/api/v1/billing/checkout", json={"pack": "credits_1k"}, headers=account.headers
    )
    second = await client.post(
        "/api/v1/billing/checkout", json={"plan": "pro"}, headers=account.headers
    )
    assert first.status_code == 201, first.text
    assert first.json() == {"url": "https://checkout.test/cs_1", "session_id": "cs_test_1"}
    assert second.status_code == 201
    paths = stripe_peer.paths()
    assert paths.count("/v1/customers") == 1
    assert paths.count("/v1/checkout/sessions") == 2
    customer = next(r for r in stripe_peer.requests if r["path"] == "/v1/customers")
    assert customer["form"]["email"] == account.email
    assert customer["headers"]["idempotency-key"] == f"customer-{account.id}"
    sessions = [r["form"] for r in stripe_peer.requests if r["path"] == "/v1/checkout/sessions"]
    assert sessions[0]["mode"] == "payment"
    assert sessions[0]["line_items[0][price_data][unit_amount]"] == "1000"
    assert sessions[0]["client_reference_id"] == account.id
    assert sessions[0]["metadata[pack]"] == "credits_1k"
    assert sessions[0]["customer"] == "cus_test1"
    assert sessions[1]["mode"] == "subscription"
    assert sessions[1]["line_items[0][price_data][recurring][interval]"] == "month"
    assert sessions[1]["subscription_data[metadata][plan]"] == "pro"
    async with runtime.db.session(write=False) as session:
        saved = await session.scalar(select(StripeCustomer.customer_id))
    assert saved == "cus_test1"
    assert (await me(client, account))["credits"] == 50  # nothing granted before payment


async def test_checkout_refuses_unknown_products_and_reports_stripe_failures(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any
) -> None:
    account = await signup()
    for body, code in (
        ({"pack": "credits_1m"}, "unknown_product"),
        ({"plan": "free"}, "unknown_product"),
        ({"plan": "pro", "pack": "credits_1k"}, "invalid_request"),
        ({}, "invalid_request"),
    ):
        answer = await client.post("/api/v1/billing/checkout", json=body, headers=account.headers)
        assert_problem(answer, 400, code)
    stripe_peer.reply(500, {"error": {"type": "api_error", "message": "down"}}, times=3)
    down = await client.post(
        "/api/v1/billing/checkout", json={"pack": "credits_1k"}, headers=account.headers
    )
    assert_problem(down, 502, "stripe_error")


async def test_billing_without_stripe_settings_says_so(
    make_settings: Any, fresh_database: None, signup: Any
) -> None:
    async with serve_app(make_settings()) as (http, _runtime):
        answer = await http.post(
            "/api/v1/auth/signup",
            json={"email": "nostripe@example.com", "password": "correct horse battery staple"},
        )
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        checkout = await http.post(
            "/api/v1/billing/checkout", json={"pack": "credits_1k"}, headers=headers
        )
        assert_problem(checkout, 503, "billing_not_configured")
        hook = await http.post("/api/v1/billing/webhook", content=b"{}")
        assert_problem(hook, 503, "billing_not_configured")


async def test_a_paid_pack_grants_its_credits_once_however_often_stripe_delivers(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    paid = pack_paid(account.id)
    first = await deliver(client, paid)
    again = await deliver(client, paid)
    assert first.json() == {"received": True, "duplicate": False}
    assert again.json() == {"received": True, "duplicate": True}
    assert (await me(client, account))["credits"] == 1050
    entries = await ledger(client, account)
    assert entries[0]["reason"] == "purchase"
    assert entries[0]["delta"] == 1000
    async with runtime.db.session(write=False) as session:
        payments = list(await session.scalars(select(Payment)))
    assert len(payments) == 1
    assert payments[0].amount_cents == 1000
    assert payments[0].payment_intent == paid["data"]["object"]["payment_intent"]


async def test_a_forged_or_stale_signature_changes_nothing(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    payload = json.dumps(pack_paid(account.id)).encode()
    forged = await client.post(
        "/api/v1/billing/webhook",
        content=payload,
        headers={"stripe-signature": signature(payload, secret="whsec_wrong")},
    )
    stale = await client.post(
        "/api/v1/billing/webhook",
        content=payload,
        headers={"stripe-signature": signature(payload, at=int(time.time()) - 3600)},
    )
    missing = await client.post("/api/v1/billing/webhook", content=payload)
    for answer in (forged, stale, missing):
        assert_problem(answer, 400, "invalid_signature")
    assert (await me(client, account))["credits"] == 50


async def test_a_subscription_sets_the_plan_and_each_paid_invoice_its_credits(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    # Stripe does not promise order: the first invoice may come before the checkout.
    async with runtime.db.session(write=True) as session, session.begin():
        session.add(StripeCustomer(user_id=account.id, customer_id="cus_test1"))
    first_invoice = await deliver(client, invoice_paid(None))
    assert first_invoice.status_code == 200, first_invoice.text
    completed = event(
        "checkout.session.completed",
        {
            "id": "cs_sub",
            "object": "checkout.session",
            "mode": "subscription",
            "payment_status": "paid",
            "customer": "cus_test1",
            "subscription": "sub_1",
            "client_reference_id": account.id,
            "metadata": {"user_id": account.id, "plan": "pro"},
        },
    )
    await deliver(client, completed)
    await deliver(client, invoice_paid(account.id))
    profile = await me(client, account)
    assert profile["plan"] == "pro"
    assert profile["credits"] == 50 + 2 * 10_000
    async with runtime.db.session(write=False) as session:
        invoices = await session.scalar(select(func.count()).select_from(Invoice))
        subscription = await session.get(Subscription, "sub_1")
    assert invoices == 2
    assert subscription is not None
    assert subscription.status == "active"

    ended = event(
        "customer.subscription.deleted",
        {"id": "sub_1", "object": "subscription", "customer": "cus_test1", "status": "canceled"},
    )
    assert (await deliver(client, ended)).status_code == 200
    assert (await me(client, account))["plan"] == "free"


async def test_an_event_for_an_unknown_account_is_acknowledged_and_ignored(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    answer = await deliver(client, pack_paid("usr_gone"))
    assert answer.status_code == 200
    async with runtime.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Payment)) == 0


async def test_usage_counts_this_months_runs_and_money(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    for _ in range(3):
        await start(client, account, workflow_id)
    await deliver(client, pack_paid(account.id))
    answer = await client.get("/api/v1/billing/usage", headers=account.headers)
    assert answer.status_code == 200
    body = answer.json()
    assert body["plan"] == "free"
    assert body["runs"] == 3
    assert body["credits_spent"] == 3
    assert body["credits"] == 50 - 3 + 1000
    assert body["paid_cents"] == 1000
    assert body["currency"] == "usd"
    assert body["period_start"] < body["period_end"]


async def test_checkout_comes_back_to_a_billing_page(client: httpx.AsyncClient) -> None:
    done = await client.get("/billing", params={"checkout": "done", "session_id": "cs_1"})
    assert done.status_code == 200
    assert "Thank you" in done.text
    assert "49.00 USD" in done.text
    cancelled = await client.get("/billing", params={"checkout": "cancelled"})
    assert "nothing was charged" in cancelled.text


async def subscribe(client: httpx.AsyncClient, account: Any, subscription: str) -> None:
    started = subscription_started(account.id, subscription)
    assert (await deliver(client, started)).status_code == 200


async def test_a_second_plan_is_refused_while_one_bills(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any
) -> None:
    account = await signup()
    await subscribe(client, account, "sub_1")
    again = await client.post(
        "/api/v1/billing/checkout", json={"plan": "starter"}, headers=account.headers
    )
    assert_problem(again, 409, "already_subscribed")
    pack = await client.post(
        "/api/v1/billing/checkout", json={"pack": "credits_1k"}, headers=account.headers
    )
    assert pack.status_code == 201


async def test_a_late_event_does_not_undo_a_newer_one(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    await subscribe(client, account, "sub_1")
    now = int(time.time())

    def changed(status: str, at: int) -> dict[str, Any]:
        body = event(
            "customer.subscription.updated",
            {
                "id": "sub_1",
                "object": "subscription",
                "customer": "cus_test1",
                "status": status,
                "metadata": {"user_id": account.id, "plan": "pro"},
            },
        )
        return body | {"created": at}

    await deliver(client, changed("past_due", now))
    await deliver(client, changed("unpaid", now + 10))
    assert (await me(client, account))["plan"] == "free"
    await deliver(client, changed("active", now + 5))  # sent before "unpaid", came after
    assert (await me(client, account))["plan"] == "free"
    await deliver(client, changed("active", now + 20))  # paid at last
    assert (await me(client, account))["plan"] == "pro"


async def test_a_subscription_still_billing_an_erased_account_is_cancelled(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any, runtime: Runtime
) -> None:
    # Bought while the erasure ran: the account is gone, Stripe still bills it.
    account = await signup()
    erased = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": PASSWORD}
    )
    assert erased.status_code == 204
    late = invoice_paid(account.id, subscription="sub_orphan")
    stripe_peer.reply(500, {"error": {"type": "api_error"}}, times=3)
    failed = await deliver(client, late)
    assert_problem(failed, 502, "stripe_error")  # Stripe will deliver it again
    retried = await deliver(client, late)
    assert retried.json() == {"received": True, "duplicate": False}
    cancels = [r["path"] for r in stripe_peer.requests if r["method"] == "DELETE"]
    assert cancels[-1] == "/v1/subscriptions/sub_orphan"
    async with runtime.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Payment)) == 0


async def test_the_billing_portal_opens_for_a_customer_only(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any
) -> None:
    stripe_peer.route(
        "POST",
        "/v1/billing_portal/sessions",
        200,
        {"id": "bps_1", "object": "billing_portal.session", "url": "https://portal.test/1"},
    )
    account = await signup()
    none_yet = await client.post("/api/v1/billing/portal", headers=account.headers)
    assert_problem(none_yet, 404, "no_billing_account")
    await client.post("/api/v1/billing/checkout", json={"plan": "pro"}, headers=account.headers)
    opened = await client.post("/api/v1/billing/portal", headers=account.headers)
    assert opened.status_code == 201
    assert opened.json() == {"url": "https://portal.test/1"}
    sent = next(r for r in stripe_peer.requests if r["path"] == "/v1/billing_portal/sessions")
    assert sent["form"] == {"customer": "cus_test1", "return_url": "http://127.0.0.1:8000/billing"}


async def test_a_plan_changed_in_the_portal_is_known_by_its_price_lookup_key(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    await subscribe(client, account, "sub_1")
    switched = event(
        "customer.subscription.updated",
        {
            "id": "sub_1",
            "object": "subscription",
            "customer": "cus_test1",
            "status": "active",
            "metadata": {"user_id": account.id, "plan": "pro"},  # still the first plan
            "items": {
                "data": [
                    {
                        "price": {"id": "price_b", "lookup_key": "business"},
                        "current_period_end": 1_800_000_000,
                    }
                ]
            },
        },
    )
    await deliver(client, switched)
    assert (await me(client, account))["plan"] == "business"


async def test_a_subscription_of_a_user_never_here_is_left_alone(
    client: httpx.AsyncClient, stripe_peer: Any
) -> None:
    # Another server sharing the Stripe account gets the same events: not ours to cancel.
    answer = await deliver(client, invoice_paid("usr_elsewhere", subscription="sub_theirs"))
    assert answer.status_code == 200
    assert not [r for r in stripe_peer.requests if r["method"] == "DELETE"]
