"""Chargebacks: credits and commission go when a dispute opens; credits return if won."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from levqor.billing.models import Dispute, Payment
from levqor.runtime import Runtime
from tests.factories import make_admin, refund
from tests.stripe_kit import deliver, event, pack_paid


def dispute(payment: Payment, kind: str, *, status: str, amount: int = 8000) -> dict[str, Any]:
    return event(
        kind,
        {
            "id": "dp_1",
            "object": "dispute",
            "amount": amount,
            "currency": "usd",
            "payment_intent": payment.payment_intent,
            "reason": "fraudulent",
            "status": status,
        },
    )


async def referred_purchase(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> tuple[Any, Any, Payment]:
    partner = await signup()
    code = (await client.post("/api/v1/partners", headers=partner.headers)).json()["code"]
    buyer = await signup(ref=code)
    await deliver(client, pack_paid(buyer.id, pack="credits_10k", amount=8000))
    async with runtime.db.session(write=False) as session:
        payment = await session.scalar(select(Payment).where(Payment.user_id == buyer.id))
    assert payment is not None
    return partner, buyer, payment


async def credits(client: httpx.AsyncClient, account: Any) -> int:
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    return int(me["credits"])


async def test_a_dispute_takes_credits_and_commission_and_a_win_gives_credits_back(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    partner, buyer, payment = await referred_purchase(client, signup, runtime)
    opened = dispute(payment, "charge.dispute.created", status="needs_response")
    assert (await deliver(client, opened)).status_code == 200
    assert (await deliver(client, opened)).json()["duplicate"] is True
    assert await credits(client, buyer) == 50
    seen = (await client.get("/api/v1/partners/me", headers=partner.headers)).json()
    assert seen["commission_cents"] == {"pending": 0, "approved": 0, "paid": 0, "held": 0}

    won = dispute(payment, "charge.dispute.closed", status="won")
    await deliver(client, won)
    # The money came back: so does the partner's share (before, it stayed taken).
    seen = (await client.get("/api/v1/partners/me", headers=partner.headers)).json()
    assert seen["commission_cents"] == {"pending": 1600, "approved": 0, "paid": 0, "held": 0}
    await deliver(client, dispute(payment, "charge.dispute.closed", status="won"))  # new id
    assert await credits(client, buyer) == 50 + 10_000
    ledger = (await client.get("/api/v1/billing/ledger", headers=buyer.headers)).json()["data"]
    assert [(e["reason"], e["delta"]) for e in ledger[:2]] == [
        ("dispute_won", 10_000),
        ("dispute", -10_000),
    ]
    async with runtime.db.session(write=False) as session:
        recorded = await session.get(Dispute, "dp_1")
    assert recorded is not None
    assert (recorded.status, recorded.reason, recorded.commission_reversed_cents) == (
        "won",
        "fraudulent",
        1600,
    )

    admin = await signup()
    await make_admin(runtime, admin)
    log = (await client.get("/api/v1/admin/audit", headers=admin.headers)).json()["data"]
    actions = [entry["action"] for entry in log if entry["actor"] == "stripe"]
    assert actions.count("dispute_opened") == actions.count("dispute_closed") == 1


async def test_a_lost_dispute_keeps_the_credits_taken(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    _partner, buyer, payment = await referred_purchase(client, signup, runtime)
    await deliver(client, dispute(payment, "charge.dispute.created", status="needs_response"))
    await deliver(client, dispute(payment, "charge.dispute.closed", status="lost"))
    assert await credits(client, buyer) == 50


async def test_a_dispute_after_a_partial_refund_takes_only_what_is_left(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    """Half refunded (5,000 credits, 800 cents of commission back), then the whole charge
    disputed: only the other half is lost to it. Before: the dispute took the whole
    payment's credits and commission again, from nothing refunded."""
    partner, buyer, payment = await referred_purchase(client, signup, runtime)
    admin = await signup()
    await make_admin(runtime, admin)
    assert (await refund(client, admin, payment.id, amount=4000)).status_code == 201
    assert await credits(client, buyer) == 50 + 5_000
    await deliver(client, dispute(payment, "charge.dispute.created", status="needs_response"))
    assert await credits(client, buyer) == 50
    async with runtime.db.read() as session:
        recorded = await session.get(Dispute, "dp_1")
    assert recorded is not None
    assert (recorded.amount_cents, recorded.credits_reversed) == (4000, 5_000)
    assert recorded.commission_reversed_cents == 800
    seen = (await client.get("/api/v1/partners/me", headers=partner.headers)).json()
    assert sum(seen["commission_cents"].values()) == 0  # not -800
    revenue = (await client.get("/api/v1/admin/revenue", headers=admin.headers)).json()
    assert (revenue["revenue_this_month_cents"], revenue["paying_users"]) == (0, 0)
    assert (revenue["refunded_this_month_cents"], revenue["disputed_this_month_cents"]) == (
        4000,
        4000,
    )
    assert seen["conversions"] == 0

    await deliver(client, dispute(payment, "charge.dispute.closed", status="won"))
    revenue = (await client.get("/api/v1/admin/revenue", headers=admin.headers)).json()
    assert (revenue["revenue_this_month_cents"], revenue["paying_users"]) == (4000, 1)
    assert revenue["disputed_this_month_cents"] == 0
    assert await credits(client, buyer) == 50 + 5_000
