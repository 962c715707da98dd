"""The partner program: links and clicks, attribution, commissions, payouts, refunds."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.cli import app as cli_app
from levqor.partners.models import Commission, Payout
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import make_admin, refund
from tests.stripe_kit import deliver, event, pack_paid


async def join(
    client: httpx.AsyncClient, account: Any, stripe_peer: Any = None, payout_account: str = ""
) -> dict[str, Any]:
    """Join the program; with `payout_account`, also onboard through Stripe Connect."""
    answer = await client.post("/api/v1/partners", headers=account.headers)
    assert answer.status_code == 201, answer.text
    joined: dict[str, Any] = answer.json()
    if payout_account:
        await onboard(client, account, stripe_peer, payout_account)
    return joined


async def onboard(
    client: httpx.AsyncClient, account: Any, stripe_peer: Any, payout_account: str
) -> None:
    """Stripe Connect, as Stripe answers it: the account `payout_account` made, its
    onboarding link, and then `account.updated` saying it can receive payouts."""
    stripe_peer.reply(200, {"id": payout_account, "object": "account"})
    stripe_peer.reply(200, {"object": "account_link", "url": "https://connect.test/x"})
    answer = await client.post("/api/v1/partners/me/connect", headers=account.headers)
    assert answer.status_code == 200, answer.text
    assert (await deliver(client, account_updated(payout_account, enabled=True))).status_code == 200


def account_updated(account_id: str, *, enabled: bool) -> dict[str, Any]:
    return event(
        "account.updated",
        {"id": account_id, "object": "account", "payouts_enabled": enabled},
    )


async def figures(client: httpx.AsyncClient, account: Any) -> dict[str, Any]:
    answer = await client.get("/api/v1/partners/me", headers=account.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def referred_customer(client: httpx.AsyncClient, signup: Any, code: str) -> Any:
    return await signup(ref=code)


async def test_joining_gives_a_code_and_link_once(client: httpx.AsyncClient, signup: Any) -> None:
    partner = await signup()
    joined = await join(client, partner)
    assert joined["id"].startswith("ptn_")
    assert joined["link"] == f"http://127.0.0.1:8000/r/{joined['code']}"
    again = await client.post("/api/v1/partners", headers=partner.headers)
    assert_problem(again, 409, "already_partner")
    stranger = await signup()
    assert_problem(
        await client.get("/api/v1/partners/me", headers=stranger.headers), 404, "not_a_partner"
    )
    bad = await client.post(
        "/api/v1/partners", headers=stranger.headers, json={"payout_account": "acct_x"}
    )
    assert_problem(bad, 422, "invalid_request")


async def test_the_link_counts_a_visitor_once_a_day_and_the_cookie_attributes_the_signup(
    client: httpx.AsyncClient, signup: Any
) -> None:
    partner = await signup()
    code = (await join(client, partner))["code"]
    first = await client.get(f"/r/{code}")
    again = await client.get(f"/r/{code}")
    assert first.status_code == again.status_code == 302
    assert first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"levqor_ref={code};")
    assert "HttpOnly" in cookie
    assert "Max-Age=2592000" in cookie

    unknown = await client.get("/r/nosuchcode")
    assert unknown.status_code == 302
    assert "set-cookie" not in unknown.headers

    client.cookies.set("levqor_ref", code)
    by_cookie = await signup()
    client.cookies.clear()
    by_body = await signup(ref=code.upper())
    nobody = await signup(ref="nosuchcode")
    assert by_cookie.id != by_body.id != nobody.id
    seen = await figures(client, partner)
    assert (seen["clicks"], seen["signups"], seen["conversions"]) == (1, 2, 0)


async def test_a_referred_payment_earns_commission_that_a_payout_sends_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    partner, admin = await signup(), await signup()
    await make_admin(runtime, admin)
    code = (await join(client, partner, stripe_peer, "acct_partner1"))["code"]
    customer = await referred_customer(client, signup, code)
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    await deliver(client, pack_paid((await signup()).id))  # not referred: no commission

    seen = await figures(client, partner)
    assert seen["conversions"] == 1
    assert seen["commission_cents"] == {"pending": 0, "approved": 1600, "paid": 0, "held": 0}

    run = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert run.status_code == 200, run.text
    [payout] = run.json()["payouts"]
    assert (payout["amount_cents"], payout["status"]) == (1600, "paid")
    transfer = next(r for r in stripe_peer.requests if r["path"] == "/v1/transfers")
    assert transfer["form"]["destination"] == "acct_partner1"
    assert transfer["form"]["amount"] == "1600"
    assert transfer["headers"]["idempotency-key"] == payout["id"]

    again = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert again.json()["payouts"] == []
    assert stripe_peer.paths().count("/v1/transfers") == 1
    seen = await figures(client, partner)
    assert seen["commission_cents"] == {"pending": 0, "approved": 0, "paid": 1600, "held": 0}
    assert [p["id"] for p in seen["payouts"]] == [payout["id"]]
    log = (
        await client.get(
            "/api/v1/admin/audit", headers=admin.headers, params={"action": "payout_sent"}
        )
    ).json()["data"]
    assert log[0]["object_id"] == partner.id
    assert log[0]["detail"]["amount_cents"] == 1600


async def test_below_the_minimum_or_without_an_account_nothing_is_paid(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    admin = await signup()
    await make_admin(runtime, admin)
    small, unpayable = await signup(), await signup()
    small_code = (await join(client, small, stripe_peer, "acct_small"))["code"]
    unpayable_code = (await join(client, unpayable))["code"]
    await deliver(client, pack_paid((await signup(ref=small_code)).id))  # 200 cents < 1,000
    big = pack_paid((await signup(ref=unpayable_code)).id, pack="credits_10k", amount=8000)
    await deliver(client, big)
    run = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert run.json()["payouts"] == []
    assert "/v1/transfers" not in stripe_peer.paths()


async def test_a_failed_transfer_leaves_the_commission_owed_for_the_next_run(
    client: httpx.AsyncClient,
    signup: Any,
    stripe_peer: Any,
    cli_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "STRIPE_SECRET_KEY": "sk_test_cli",
        "STRIPE_API_BASE": stripe_peer.url,
        "PARTNER_HOLD_DAYS": "0",
        "PARTNER_PAYOUT_MINIMUM_CENTS": "1000",
    }.items():
        monkeypatch.setenv(f"LEVQOR_{name}", value)
    partner = await signup()
    code = (await join(client, partner, stripe_peer, "acct_partner1"))["code"]
    customer = await signup(ref=code)
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    stripe_peer.reply(
        400, {"error": {"type": "invalid_request_error", "message": "No such destination"}}
    )
    runner = CliRunner()
    failed = await asyncio.to_thread(runner.invoke, cli_app, ["payouts", "run", "--json"])
    assert failed.exit_code == 1, failed.output
    assert '"status": "failed"' in failed.output
    assert (await figures(client, partner))["commission_cents"]["approved"] == 1600

    paid = await asyncio.to_thread(runner.invoke, cli_app, ["payouts", "run"])
    assert paid.exit_code == 0, paid.output
    assert "paid" in paid.output
    seen = await figures(client, partner)
    assert seen["commission_cents"] == {"pending": 0, "approved": 0, "paid": 1600, "held": 0}
    assert sorted(p["status"] for p in seen["payouts"]) == ["failed", "paid"]


async def test_a_refund_takes_back_commission_unpaid_or_from_the_next_payout(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    partner, admin = await signup(), await signup()
    await make_admin(runtime, admin)
    code = (await join(client, partner, stripe_peer, "acct_partner1"))["code"]
    customer = await signup(ref=code)
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    async with runtime.db.session(write=False) as session:
        [payment_id] = list(await session.scalars(select(Commission.payment_id)))

    unpaid = await refund(client, admin, payment_id, amount=4000)
    assert unpaid.json()["commission_reversed_cents"] == 800
    assert (await figures(client, partner))["commission_cents"]["approved"] == 800

    # A second sale, paid out, then refunded: the claw-back waits for the next payout.
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    first = (await client.post("/api/v1/admin/payouts/run", headers=admin.headers)).json()
    assert [p["amount_cents"] for p in first["payouts"]] == [800 + 1600 + 1600]
    stripe_peer.route("POST", "/v1/refunds", 200, {"id": "re_test_2", "object": "refund"})
    async with runtime.db.session(write=False) as session:
        latest = await session.scalar(
            select(Commission.payment_id)
            .where(Commission.payment_id != payment_id)
            .order_by(Commission.created_at.desc())
        )
    assert latest is not None
    clawed = await refund(client, admin, latest)
    assert clawed.json()["commission_reversed_cents"] == 1600
    seen = await figures(client, partner)
    assert seen["commission_cents"]["approved"] == -1600
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    await deliver(client, pack_paid(customer.id, pack="credits_10k", amount=8000))
    second = (await client.post("/api/v1/admin/payouts/run", headers=admin.headers)).json()
    assert [p["amount_cents"] for p in second["payouts"]] == [3 * 1600 - 1600]
    async with runtime.db.session(write=False) as session:
        payouts = list(await session.scalars(select(Payout)))
    assert sum(p.amount_cents for p in payouts) == 800 + 1600 * 5 - 1600
