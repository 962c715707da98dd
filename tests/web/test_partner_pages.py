"""The partner page: join, then the link that brings sign-ups, counted in the funnel."""

from __future__ import annotations

import re

import httpx

from tests.conftest import PASSWORD
from tests.factories import signed_in


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


async def test_a_bad_payout_account_is_refused_on_the_page(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "careless@example.com")
    answer = await client.post(
        "/app/partner", data={"csrf_token": token, "payout_account": "iban:DE00"}
    )
    assert answer.status_code == 400
    assert "acct_" in answer.text
