"""Refunds: money back through Stripe once, credits taken back, audited."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select, text, update

from levqor.accounts.models import User
from levqor.billing.models import CreditEntry, Payment, Refund
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import make_admin, refund
from tests.stripe_kit import deliver, event, invoice_paid, pack_paid


async def paid_pack(client: httpx.AsyncClient, runtime: Runtime, account: Any) -> Payment:
    paid = pack_paid(account.id, pack="credits_10k", amount=8000)
    assert (await deliver(client, paid)).status_code == 200
    async with runtime.db.session(write=False) as session:
        payment = await session.scalar(select(Payment).where(Payment.user_id == account.id))
    assert payment is not None
    return payment


async def admin_and_payment(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> tuple[Any, Any, Payment]:
    """An admin, and a customer who bought 10,000 credits for 80.00."""
    admin, customer = await signup(), await signup()
    await make_admin(runtime, admin)
    return admin, customer, await paid_pack(client, runtime, customer)


async def test_a_partial_refund_takes_back_its_share_of_credits_and_is_audited(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin, customer, payment = await admin_and_payment(client, signup, runtime)

    answer = await refund(client, admin, payment.id, amount=2000)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["id"] == "re_test_1"
    assert body["amount_cents"] == 2000
    assert body["credits_reversed"] == 2500  # a quarter of 10,000 credits
    sent = next(r for r in stripe_peer.requests if r["path"] == "/v1/refunds")
    assert sent["form"]["payment_intent"] == payment.payment_intent
    assert sent["form"]["amount"] == "2000"
    assert sent["headers"]["idempotency-key"].startswith("rfq_")

    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert me["credits"] == 50 + 10_000 - 2500
    ledger = (await client.get("/api/v1/billing/ledger", headers=customer.headers)).json()["data"]
    assert (ledger[0]["reason"], ledger[0]["delta"]) == ("refund", -2500)
    log = (
        await client.get(
            "/api/v1/admin/audit", headers=admin.headers, params={"action": "refund_issued"}
        )
    ).json()["data"]
    assert log[0]["actor"] == admin.id
    assert log[0]["object_id"] == customer.id
    assert log[0]["detail"]["amount_cents"] == 2000

    too_much = await refund(client, admin, payment.id, amount=6001)
    assert_problem(too_much, 400, "invalid_request")
    stripe_peer.route("POST", "/v1/refunds", 200, {"id": "re_test_2", "object": "refund"})
    rest = await refund(client, admin, payment.id)
    assert rest.json()["amount_cents"] == 6000
    async with runtime.db.session(write=False) as session:
        settled = await session.get(Payment, payment.id)
    assert settled is not None
    assert (settled.refunded_cents, settled.status) == (8000, "refunded")
    assert_problem(await refund(client, admin, payment.id), 409, "not_refundable")


async def test_credits_already_spent_are_owed_and_the_next_purchase_repays_them(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """Before: the balance stopped at zero and the 9,700 spent credits were simply lost
    to the business. Now they are owed, shown in the ledger, and repaid first."""
    admin, customer, payment = await admin_and_payment(client, signup, runtime)
    async with runtime.db.session(write=True) as session, session.begin():  # runs spent 9,750
        await session.execute(update(User).where(User.id == customer.id).values(credits=300))
        session.add(CreditEntry(user_id=customer.id, delta=-9_750, balance_after=300, reason="run"))
    answer = await refund(client, admin, payment.id)
    assert answer.json()["credits_reversed"] == 10_000
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert (me["credits"], me["credits_owed"]) == (0, 9_700)
    ledger = (await client.get("/api/v1/billing/ledger", headers=customer.headers)).json()
    assert [(e["reason"], e["delta"], e["owed_after"]) for e in ledger["data"][:2]] == [
        ("refund_owed", 0, 9_700),
        ("refund", -300, None),
    ]

    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert (me["credits"], me["credits_owed"]) == (300, 0)
    ledger = (await client.get("/api/v1/billing/ledger", headers=customer.headers)).json()
    assert [(e["reason"], e["delta"], e["owed_after"]) for e in ledger["data"][:2]] == [
        ("owed_repaid", -9_700, 0),
        ("purchase", 10_000, None),
    ]
    async with runtime.db.read() as session:
        entries = (
            await session.scalars(
                select(CreditEntry.delta).where(CreditEntry.user_id == customer.id)
            )
        ).all()
    assert sum(entries) == 300  # the ledger still sums to the balance


async def test_the_same_refund_sent_twice_is_recorded_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin, customer, payment = await admin_and_payment(client, signup, runtime)
    key = {"idempotency-key": "refund-attempt-1"}
    first = await client.post(
        "/api/v1/admin/refunds",
        json={"payment_id": payment.id, "amount": 1000, "reason": "asked"},
        headers=admin.headers | key,
    )
    second = await client.post(
        "/api/v1/admin/refunds",
        json={"payment_id": payment.id, "amount": 1000, "reason": "asked"},
        headers=admin.headers | key,
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert len(stripe_peer.executed("/v1/refunds")) == 1
    async with runtime.db.session(write=False) as session:
        refunds = list(await session.scalars(select(Refund)))
    assert len(refunds) == 1
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert me["credits"] == 50 + 10_000 - 1250
    other = await client.post(
        "/api/v1/admin/refunds",
        json={"payment_id": payment.id, "amount": 2000, "reason": "asked"},
        headers=admin.headers | key,
    )
    assert_problem(other, 409, "conflict")


async def test_a_refund_retried_after_a_timeout_and_its_webhook_refunds_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """Stripe makes the refund but answers too late; its `refund.created` arrives; the
    admin retries with the same Idempotency-Key. Before: the retry's key included the
    amount refunded so far, now changed by the webhook, and Stripe refunded again."""
    admin, customer, payment = await admin_and_payment(client, signup, runtime)
    request = {"payment_id": payment.id, "amount": 2000, "reason": "asked"}
    headers = admin.headers | {"idempotency-key": "k-42"}
    stripe_peer.hold.add("/v1/refunds")
    timed_out = await client.post("/api/v1/admin/refunds", json=request, headers=headers)
    assert_problem(timed_out, 502, "stripe_error")
    stripe_peer.release()
    made = event(
        "refund.created",
        {
            "id": "re_test_1",
            "object": "refund",
            "amount": 2000,
            "status": "succeeded",
            "payment_intent": payment.payment_intent,
            "metadata": {"payment_id": payment.id, "reason": "asked"},
        },
    )
    assert (await deliver(client, made)).status_code == 200
    retried = await client.post("/api/v1/admin/refunds", json=request, headers=headers)
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == "re_test_1"
    assert len(stripe_peer.executed("/v1/refunds")) == 1
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert me["credits"] == 50 + 10_000 - 2500
    async with runtime.db.read() as session:
        settled = await session.get(Payment, payment.id)
    assert settled is not None
    assert settled.refunded_cents == 2000


async def test_refunds_need_an_admin_and_a_known_payment(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    user, admin = await signup(), await signup()
    await make_admin(runtime, admin)
    assert_problem(await refund(client, user, "pay_x"), 403, "forbidden")
    assert_problem(await refund(client, admin, "pay_x"), 404, "not_found")
    assert "/v1/refunds" not in stripe_peer.paths()


async def test_a_refund_stripe_refuses_changes_nothing_here(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin, customer, payment = await admin_and_payment(client, signup, runtime)
    stripe_peer.reply(
        400,
        {"error": {"type": "invalid_request_error", "message": "Charge already refunded"}},
    )
    answer = await refund(client, admin, payment.id)
    assert_problem(answer, 502, "stripe_error")
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert me["credits"] == 50 + 10_000


async def test_a_plan_invoice_is_refunded_through_the_payment_stripe_names(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin, customer = await signup(), await signup()
    await make_admin(runtime, admin)
    paid = invoice_paid(customer.id)
    del paid["data"]["object"]["payments"]  # as webhooks send it: `payments` not included
    await deliver(client, paid)
    async with runtime.db.session(write=False) as session:
        payment = await session.scalar(select(Payment).where(Payment.user_id == customer.id))
    assert payment is not None
    assert payment.payment_intent is None
    stripe_peer.route(
        "GET",
        "/v1/invoice_payments",
        200,
        {
            "object": "list",
            "data": [
                {
                    "id": "inpay_1",
                    "object": "invoice_payment",
                    "payment": {"type": "payment_intent", "payment_intent": "pi_from_list"},
                }
            ],
            "has_more": False,
        },
    )
    answer = await refund(client, admin, payment.id, reason="duplicate charge for jo@example.org")
    assert answer.status_code == 201, answer.text
    sent = next(r for r in stripe_peer.requests if r["path"] == "/v1/refunds")
    assert sent["form"]["payment_intent"] == "pi_from_list"
    listed = next(r for r in stripe_peer.requests if r["method"] == "GET")
    assert f"invoice={paid['data']['object']['id']}" in str(listed["path"])
    # The reason is free text about a person: sealed at rest, in clear in the API.
    async with runtime.db.session(write=False) as session:
        raw = await session.execute(text("SELECT reason_encrypted FROM refunds"))
        assert "jo@example.org" not in str(raw.scalar())
        kept = await session.scalar(select(Refund.reason))
    assert kept == "duplicate charge for jo@example.org"


async def test_a_refund_made_in_stripes_dashboard_is_recorded_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin, customer, payment = await admin_and_payment(client, signup, runtime)
    made_there = event(
        "refund.created",
        {
            "id": "re_dashboard",
            "object": "refund",
            "amount": 4000,
            "currency": "usd",
            "payment_intent": payment.payment_intent,
            "status": "succeeded",
            "metadata": {},
        },
    )
    assert (await deliver(client, made_there)).status_code == 200
    assert (await deliver(client, made_there)).json()["duplicate"] is True
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert me["credits"] == 50 + 10_000 - 5000
    # Our own refund's event, arriving after we recorded it, changes nothing.
    ours = await refund(client, admin, payment.id, amount=1000)
    assert ours.status_code == 201
    echo = event(
        "refund.created",
        {
            "id": "re_test_1",
            "object": "refund",
            "amount": 1000,
            "payment_intent": payment.payment_intent,
            "status": "succeeded",
            "metadata": {"payment_id": payment.id},
        },
    )
    assert (await deliver(client, echo)).json()["duplicate"] is False
    async with runtime.db.session(write=False) as session:
        settled = await session.get(Payment, payment.id)
        recorded = list(await session.scalars(select(Refund.id).order_by(Refund.id)))
    assert settled is not None
    assert settled.refunded_cents == 5000
    assert recorded == ["re_dashboard", "re_test_1"]
    log = (
        await client.get(
            "/api/v1/admin/audit", headers=admin.headers, params={"action": "refund_issued"}
        )
    ).json()["data"]
    assert sorted(entry["actor"] for entry in log) == sorted([admin.id, "stripe"])


async def test_partial_refunds_that_add_up_to_the_whole_take_back_every_credit(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin, customer, payment = await admin_and_payment(client, signup, runtime)
    taken = []
    for n, cents in enumerate((1, 3333, 3333, 1333)):  # 8,000 cents in four refunds
        stripe_peer.route("POST", "/v1/refunds", 200, {"id": f"re_part{n}", "object": "refund"})
        answer = await refund(client, admin, payment.id, amount=cents)
        assert answer.status_code == 201, answer.text
        taken.append(answer.json()["credits_reversed"])
    assert sum(taken) == 10_000
    me = (await client.get("/api/v1/me", headers=customer.headers)).json()
    assert me["credits"] == 50
