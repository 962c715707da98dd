"""The partner page: join, then the link that brings sign-ups, counted in the funnel."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import PASSWORD, serve_app
from tests.factories import signed_in
from tests.stripe_kit import stripe_peer, stripe_settings

__all__ = ["stripe_peer"]


async def test_joining_gives_a_link_whose_signups_are_counted(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "partner@example.com")
    before = await client.get("/app/partner")
    assert "Join" in before.text
    joined = await client.post("/app/partner", data={"csrf_token": token})
    assert joined.status_code == 303
    page = (await client.get("/app/partner")).text
    link = re.search(r'<code id="referral-link">([^<]+)</code>', page)
    assert link
    path = "/" + link.group(1).split("/", 3)[3]
    client.cookies.clear()
    await client.get(path)  # a visitor follows it; the referral cookie is set
    await signed_in(client, "friend@example.com")
    client.cookies.clear()
    await signed_in(client, "partner2@example.com")  # unrelated
    client.cookies.clear()
    login = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf
    await client.post(
        "/login",
        data={
            "email": "partner@example.com",
            "password": PASSWORD,
            "csrf_token": csrf.group(1),
        },
    )
    funnel = (await client.get("/app/partner")).text
    assert re.search(r"<td>1</td><td>1</td><td>0</td>", funnel), funnel  # click, sign-up


async def test_payouts_are_set_up_through_stripe_onboarding(
    make_settings: Any, fresh_database: None, stripe_peer: Any
) -> None:
    async with serve_app(stripe_settings(make_settings, stripe_peer)) as (client, _runtime):
        token = await signed_in(client, "earner@example.com")
        await client.post("/app/partner", data={"csrf_token": token})
        page = await client.get("/app/partner")
        assert "Set up payouts with Stripe" in page.text
        assert "payout_account" not in page.text  # no account id to paste any more
        stripe_peer.reply(200, {"id": "acct_web1", "object": "account"})
        stripe_peer.reply(200, {"object": "account_link", "url": "https://connect.test/web"})
        answer = await client.post("/app/partner/connect", data={"csrf_token": token})
        assert answer.status_code == 303
        assert answer.headers["location"] == "https://connect.test/web"
        page = await client.get("/app/partner")
        assert "Stripe needs more details" in page.text
        stripe_peer.reply(503, {"error": {"type": "api_error", "message": "down"}}, times=3)
        failed = await client.post("/app/partner/connect", data={"csrf_token": token})
        assert failed.status_code == 303
        shown = await client.get(failed.headers["location"])
        assert "Stripe did not answer" in shown.text
