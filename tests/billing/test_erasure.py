"""Export and erasure of an account that paid and referred: Stripe subscriptions are
cancelled, money records stay under a tombstone, the partner program's data goes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from levqor.accounts.models import User
from levqor.cli import app as cli_app
from levqor.compliance import registry
from levqor.db.models import metadata
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, assert_problem
from tests.factories import make_admin, refund, sqlite_files
from tests.stripe_kit import deliver, invoice_paid, pack_paid, subscription_started

MONEY_TABLES = ("payments", "invoices", "refunds", "credit_ledger", "commissions", "payouts")


async def a_paying_partner(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> tuple[Any, Any]:
    """A user with a live subscription, a refunded pack, and a partner program with a
    referral and a click; and the admin who refunded."""
    admin, account = await signup(), await signup()
    await make_admin(runtime, admin)
    started = subscription_started(account.id, "sub_live")
    await deliver(client, started)
    await deliver(client, invoice_paid(account.id, subscription="sub_live"))
    await deliver(client, pack_paid(account.id))
    async with runtime.db.session(write=False) as session:
        payment_id = await session.scalar(
            select(metadata.tables["payments"].c.id).where(
                metadata.tables["payments"].c.product == "credits_1k"
            )
        )
    assert (await refund(client, admin, str(payment_id), amount=100)).status_code == 201
    joined = await client.post("/api/v1/partners", headers=account.headers)
    code = joined.json()["code"]
    await client.get(f"/r/{code}")
    await signup(ref=code)
    return account, admin


async def rows_naming(runtime: Runtime, user_id: str) -> dict[str, int]:
    counts = {}
    async with runtime.db.session(write=False) as session:
        for name, rule in registry.TABLES.items():
            if isinstance(rule, registry.Owned) and rule.erase != "by_account_key":
                table = metadata.tables[name]
                counts[name] = (
                    await session.scalar(
                        select(func.count()).where(table.c[rule.column] == user_id)
                    )
                    or 0
                )
    return counts


async def test_the_export_holds_payments_invoices_and_partner_data(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account, _admin = await a_paying_partner(client, signup, runtime)
    document = (await client.get("/api/v1/me/export", headers=account.headers)).json()
    filled = {name for name, rows in document["data"].items() if rows}
    assert filled >= {
        "billing_customers",
        "subscriptions",
        "payments",
        "invoices",
        "refunds",
        "partners",
        "referral_clicks",
        "credit_ledger",
    }
    assert "visitor_hash" in document["data"]["referral_clicks"][0]
    assert "Stripe" in " ".join(document["about"]["recipients"])


async def test_erasure_cancels_the_subscription_and_keeps_money_under_a_tombstone(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    account, admin = await a_paying_partner(client, signup, runtime)
    before = await rows_naming(runtime, account.id)
    assert all(before[name] for name in ("payments", "invoices", "refunds", "credit_ledger"))

    answer = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": PASSWORD}
    )
    assert answer.status_code == 204, answer.text
    cancel = [r for r in stripe_peer.requests if r["method"] == "DELETE"]
    assert [r["path"] for r in cancel] == ["/v1/subscriptions/sub_live"]

    left = await rows_naming(runtime, account.id)
    assert {name: count for name, count in left.items() if count and name != "audit_log"} == {}
    receipt = (
        await client.get(
            "/api/v1/admin/audit", headers=admin.headers, params={"action": "account_erased"}
        )
    ).json()["data"][0]
    tombstone = receipt["detail"]["tombstone"]
    assert receipt["detail"]["subscriptions_cancelled"] == ["sub_live"]
    kept = await rows_naming(runtime, tombstone)
    for name in ("payments", "invoices", "refunds", "credit_ledger"):
        assert kept[name] == before[name], name
    async with runtime.db.session(write=False) as session:
        for name in ("partners", "referral_clicks", "referrals", "subscriptions"):
            assert (
                await session.scalar(select(func.count()).select_from(metadata.tables[name])) == 0
            ), name


async def test_when_stripe_cannot_cancel_nothing_is_erased(
    client: httpx.AsyncClient,
    signup: Any,
    runtime: Runtime,
    stripe_peer: Any,
    cli_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account, _admin = await a_paying_partner(client, signup, runtime)
    stripe_peer.route("DELETE", "/v1/subscriptions/", 500, {"error": {"type": "api_error"}})
    answer = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": PASSWORD}
    )
    assert_problem(answer, 502, "stripe_error")
    monkeypatch.setenv("LEVQOR_STRIPE_SECRET_KEY", "sk_test_cli")
    monkeypatch.setenv("LEVQOR_STRIPE_API_BASE", stripe_peer.url)
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["users", "delete", account.email, "--yes"]
    )
    assert result.exit_code == 1
    assert "Nothing was erased" in result.output
    async with runtime.db.session(write=False) as session:
        assert await session.get(User, account.id) is not None
    assert (await client.get("/api/v1/me", headers=account.headers)).status_code == 200

    # Stripe back, and the subscription already gone there: erasure completes.
    stripe_peer.route(
        "DELETE",
        "/v1/subscriptions/",
        404,
        {"error": {"type": "invalid_request_error", "code": "resource_missing"}},
    )
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["users", "delete", account.email, "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert (await rows_naming(runtime, account.id))["users"] == 0


async def test_a_wrong_password_erases_nothing_and_calls_no_one(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any
) -> None:
    account, _admin = await a_paying_partner(client, signup, runtime)
    answer = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": "not it at all"}
    )
    assert_problem(answer, 403, "wrong_password")
    assert not [r for r in stripe_peer.requests if r["method"] == "DELETE"]


async def test_billing_and_partner_records_hold_no_address_or_name_in_clear(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, stripe_peer: Any, settings: Any
) -> None:
    admin = await signup()
    await make_admin(runtime, admin)
    buyer = await signup(email="grace.hopper@example.org", name="Grace Brewster Hopper")
    await client.post(
        "/api/v1/billing/checkout", json={"pack": "credits_1k"}, headers=buyer.headers
    )
    await deliver(client, pack_paid(buyer.id))
    await client.post("/api/v1/partners", headers=buyer.headers)
    async with runtime.db.session(write=False) as session:
        payment_id = await session.scalar(select(metadata.tables["payments"].c.id))
    asked = await refund(
        client, admin, str(payment_id), reason="Grace Brewster Hopper, grace.hopper@example.org"
    )
    assert asked.status_code == 201
    if runtime.db.is_sqlite:
        raw = await asyncio.to_thread(sqlite_files, Path(settings.data_dir))
    else:
        lines = []
        async with runtime.db.read() as session:
            for table in metadata.sorted_tables:  # raw text: a Sealed column would decrypt
                dump = f'SELECT row_to_json(t)::text FROM "{table.name}" t'  # noqa: S608
                rows = await session.execute(text(dump))
                lines += [row[0] for row in rows]
        raw = "\n".join(lines).encode()
    assert buyer.id.encode() in raw  # reading the right rows
    assert b"grace.hopper@example.org" not in raw.lower()
    assert b"Grace Brewster Hopper" not in raw
