"""The fraud guard: referred signups scored; a flagged one's commission held for review."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI
from typer.testing import CliRunner

from levqor.cli import app as cli_app
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, Account, assert_problem
from tests.factories import make_admin
from tests.partners.test_program import figures, join
from tests.stripe_kit import deliver, pack_paid


async def partner_and_admin(
    client: httpx.AsyncClient,
    signup: Any,
    runtime: Runtime,
    stripe_peer: Any,
    email: str | None = None,
) -> tuple[Any, str, Any]:
    partner, admin = await signup(email), await signup()
    await make_admin(runtime, admin)
    code = (await join(client, partner, stripe_peer, "acct_partner1"))["code"]
    return partner, code, admin


async def signup_from(
    app: FastAPI, ip: str, email: str, code: str, cookies: httpx.Cookies | None = None
) -> Account:
    """A signup from `ip` (a loopback address; the ASGI transport sends nothing)."""
    transport = httpx.ASGITransport(app=app, client=(ip, 4242))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies=cookies
    ) as person:
        answer = await person.post(
            "/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "ref": code}
        )
    assert answer.status_code == 201, answer.text
    return Account(email, answer.json())


async def referrals(client: httpx.AsyncClient, admin: Any, **params: str) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/admin/referrals", headers=admin.headers, params=params)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


async def test_a_disposable_address_is_flagged_held_and_approving_pays_it(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, app: FastAPI, stripe_peer: Any
) -> None:
    partner, code, admin = await partner_and_admin(client, signup, runtime, stripe_peer)
    throwaway = await signup_from(app, "127.9.0.1", "buyer@mailinator.com", code)
    clean = await signup_from(app, "127.9.0.2", "someone@example.org", code)
    await deliver(client, pack_paid(throwaway.id, pack="credits_10k", amount=8000))
    await deliver(client, pack_paid(clean.id, pack="credits_10k", amount=8000))

    [flagged] = await referrals(client, admin, status="flagged")
    assert (flagged["id"], flagged["partner_id"]) == (throwaway.id, partner_id(flagged))
    names = [signal["name"] for signal in flagged["signals"]]
    assert "disposable_email" in names
    assert flagged["score"] >= 50
    [ok] = await referrals(client, admin, status="ok")
    assert ok["id"] == clean.id
    seen = await figures(client, partner)
    assert seen["commission_cents"] == {"pending": 0, "approved": 1600, "paid": 0, "held": 1600}

    paid = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert [p["amount_cents"] for p in paid.json()["payouts"]] == [1600]  # the clean one only

    approved = await client.post(
        f"/api/v1/admin/referrals/{throwaway.id}/approve", headers=admin.headers
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("approved", admin.id)
    again = await client.post(
        f"/api/v1/admin/referrals/{throwaway.id}/approve", headers=admin.headers
    )
    assert_problem(again, 409, "not_flagged")
    paid = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert [p["amount_cents"] for p in paid.json()["payouts"]] == [1600]
    seen = await figures(client, partner)
    assert seen["commission_cents"] == {"pending": 0, "approved": 0, "paid": 3200, "held": 0}


def partner_id(referral: dict[str, Any]) -> str:
    return str(referral["partner_id"])


async def test_the_partners_own_address_with_gmail_dots_and_a_tag_is_rejected_and_void(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, app: FastAPI, stripe_peer: Any
) -> None:
    partner, code, admin = await partner_and_admin(
        client, signup, runtime, stripe_peer, email="jane.doe@gmail.com"
    )
    again = await signup_from(app, "127.9.0.3", "JaneDoe+deal@googlemail.com", code)
    await deliver(client, pack_paid(again.id, pack="credits_10k", amount=8000))
    [flagged] = await referrals(client, admin, status="flagged")
    assert flagged["signals"][0]["name"] == "same_email"

    rejected = await client.post(
        f"/api/v1/admin/referrals/{again.id}/reject", headers=admin.headers
    )
    assert rejected.json()["status"] == "rejected"
    await deliver(client, pack_paid(again.id, pack="credits_10k", amount=8000))  # earns nothing
    seen = await figures(client, partner)
    assert seen["commission_cents"] == {"pending": 0, "approved": 0, "paid": 0, "held": 0}
    paid = await client.post("/api/v1/admin/payouts/run", headers=admin.headers)
    assert paid.json()["payouts"] == []
    assert "/v1/transfers" not in stripe_peer.paths()


async def test_a_signup_from_the_partners_own_ip_or_browser_is_flagged(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, app: FastAPI, stripe_peer: Any
) -> None:
    """The partner's own requests (joining the program, logging in) came from the test
    client's 127.0.0.1; the login left a device cookie in that browser."""
    partner, code, admin = await partner_and_admin(client, signup, runtime, stripe_peer)
    same_ip = await signup_from(app, "127.0.0.1", "neighbour@example.org", code)
    login = await client.post(
        "/api/v1/auth/login", json={"email": partner.email, "password": PASSWORD}
    )
    assert login.status_code == 200
    same_browser = await signup_from(
        app, "127.9.0.4", "other@example.org", code, cookies=client.cookies
    )
    flagged = {r["id"]: r for r in await referrals(client, admin, status="flagged")}
    assert [s["name"] for s in flagged[same_ip.id]["signals"]] == ["partner_ip"]
    assert "partner_device" in [s["name"] for s in flagged[same_browser.id]["signals"]]
    assert "127.0.0.1" not in json.dumps(list(flagged.values()))  # hashes only


async def test_many_signups_from_one_ip_are_flagged_from_the_third(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, app: FastAPI, stripe_peer: Any
) -> None:
    _partner, code, admin = await partner_and_admin(client, signup, runtime, stripe_peer)
    made = [await signup_from(app, "127.9.0.5", f"p{n}@example.org", code) for n in range(3)]
    statuses = {r["id"]: r["status"] for r in await referrals(client, admin)}
    assert [statuses[account.id] for account in made] == ["ok", "ok", "flagged"]


async def test_the_fraud_log_lists_every_decision_with_its_signals(
    client: httpx.AsyncClient,
    signup: Any,
    runtime: Runtime,
    app: FastAPI,
    cli_env: Any,
    stripe_peer: Any,
) -> None:
    _partner, code, admin = await partner_and_admin(client, signup, runtime, stripe_peer)
    first = await signup_from(app, "127.9.0.6", "a@mailinator.com", code)
    await signup_from(app, "127.9.0.7", "b@mailinator.com", code)
    await client.post(f"/api/v1/admin/referrals/{first.id}/reject", headers=admin.headers)
    runner = CliRunner()
    shown = await asyncio.to_thread(runner.invoke, cli_app, ["partners", "fraud-log", "--json"])
    assert shown.exit_code == 0, shown.output
    log = json.loads(shown.output)
    assert [row["decision"] for row in log] == ["rejected", "flagged", "flagged"]
    assert log[0]["by"] == admin.id
    assert log[0]["referral"] == first.id
    assert log[0]["signals"][0]["name"] == "disposable_email"
    table = await asyncio.to_thread(runner.invoke, cli_app, ["partners", "fraud-log"])
    assert table.exit_code == 0
    assert "rejected" in table.output
    forbidden = await client.get("/api/v1/admin/referrals", headers=_partner.headers)
    assert_problem(forbidden, 403, "forbidden")
