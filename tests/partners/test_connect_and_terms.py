"""Stripe Connect onboarding (payouts only to enabled accounts) and commission terms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from levqor.billing.models import Payment
from levqor.db.base import utcnow
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import make_admin
from tests.partners.test_program import account_updated, figures, join, onboard
from tests.stripe_kit import deliver, pack_paid


async def test_connect_creates_one_express_account_and_payouts_wait_until_it_is_enabled(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    partner, admin = await signup(), await signup()
    await make_admin(runtime, admin)
    assert_problem(
        await client.post("/api/v1/partners/me/connect", headers=partner.headers),
        404,
        "not_a_partner",
    )
    code = (await join(client, partner))["code"]
    await deliver(client, pack_paid((await signup(ref=code)).id, pack="credits_10k", amount=8000))

    stripe_peer.reply(200, {"id": "acct_new1", "object": "account"})
    stripe_peer.reply(200, {"object": "account_link", "url": "https://connect.test/one"})
    first = await client.post("/api/v1/partners/me/connect", headers=partner.headers)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "url": "https://connect.test/one",
        "account_id": "acct_new1",
        "payouts_enabled": False,
    }
    stripe_peer.reply(200, {"object": "account_link", "url": "https://connect.test/two"})
    again = await client.post("/api/v1/partners/me/connect", headers=partner.headers)
    assert again.json()["url"] == "https://connect.test/two"
    [created] = stripe_peer.executed("/v1/accounts")
    form = created["form"]
    assert isinstance(form, dict)
    assert (form["type"], form["metadata[partner_id]"]) == (
        "express",
        (await figures(client, partner))["id"],
    )
    assert form["capabilities[transfers][requested]"] == "true"
    links = stripe_peer.executed("/v1/account_links")
    assert [link["form"]["type"] for link in links] == ["account_onboarding"] * 2

    # Not enabled yet: the commission waits.
    paid = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert paid.json()["payouts"] == []
    await deliver(client, account_updated("acct_new1", enabled=True))
    assert (await figures(client, partner))["payouts_enabled"] is True
    paid = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    [payout] = paid.json()["payouts"]
    assert (payout["status"], payout["amount_cents"]) == ("paid", 1600)
    [transfer] = stripe_peer.executed("/v1/transfers")
    assert transfer["form"]["destination"] == "acct_new1"

    # Stripe turns payouts off (a requirement due): the next run waits again.
    await deliver(client, account_updated("acct_new1", enabled=False))
    assert (await figures(client, partner))["payouts_enabled"] is False
    unknown = await deliver(client, account_updated("acct_someone_else", enabled=True))
    assert unknown.status_code == 200


async def test_a_stripe_answer_without_an_account_id_is_a_502_not_a_crash(
    client: httpx.AsyncClient, signup: Any, stripe_peer: Any
) -> None:
    partner = await signup()
    await join(client, partner)
    stripe_peer.reply(200, {"object": "account"})
    answer = await client.post("/api/v1/partners/me/connect", headers=partner.headers)
    assert_problem(answer, 502, "stripe_error")
    assert (await figures(client, partner))["payout_account"] is None


async def test_a_partner_can_no_longer_paste_an_account_id(
    client: httpx.AsyncClient, signup: Any
) -> None:
    partner = await signup()
    pasted = await client.post(
        "/api/v1/partners", headers=partner.headers, json={"payout_account": "acct_anyone"}
    )
    assert_problem(pasted, 422, "invalid_request")


async def test_commission_is_earned_for_twelve_months_from_the_first_payment(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    partner = await signup()
    code = (await join(client, partner))["code"]
    await onboard(client, partner, stripe_peer, "acct_partner1")
    customer = await signup(ref=code)
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Payment).values(created_at=utcnow() - timedelta(days=366)))
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    seen = await figures(client, partner)
    assert seen["commission_cents"]["approved"] == 1600  # the first only


async def test_an_admin_sets_a_partners_rate_audited(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    partner, admin = await signup(), await signup()
    await make_admin(runtime, admin)
    joined = await join(client, partner)
    changed = await client.put(
        f"/api/v1/admin/partners/{joined['id']}/commission",
        headers=admin.headers,
        json={"commission_bp": 3000},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["commission_percent"] == 30.0
    refused = await client.put(
        f"/api/v1/admin/partners/{joined['id']}/commission",
        headers=partner.headers,
        json={"commission_bp": 9000},
    )
    assert_problem(refused, 403, "forbidden")
    for wrong in (False, 10_001, "3000"):
        bad = await client.put(
            f"/api/v1/admin/partners/{joined['id']}/commission",
            headers=admin.headers,
            json={"commission_bp": wrong},
        )
        assert_problem(bad, 422, "invalid_request")
    await deliver(
        client, pack_paid((await signup(ref=joined["code"])).id, pack="credits_10k", amount=8000)
    )
    assert (await figures(client, partner))["commission_cents"]["approved"] == 2400
    log = await client.get(
        "/api/v1/admin/audit",
        headers=admin.headers,
        params={"action": "partner_commission_changed"},
    )
    [entry] = log.json()["data"]
    assert (entry["actor"], entry["detail"]) == (
        admin.id,
        {"partner_id": joined["id"], "from_bp": 2000, "to_bp": 3000},
    )
