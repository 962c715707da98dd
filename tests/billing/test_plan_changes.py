"""A plan changed in Stripe's portal: each invoice grants the credits of what it bills.

Before: the plan came from the subscription's metadata, which keeps the plan bought at
checkout, so a business → starter downgrade went on granting business credits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from levqor.billing.models import Payment
from levqor.config import Settings
from levqor.runtime import Runtime
from tests.stripe_kit import (
    deliver,
    event,
    invoice_line,
    invoice_paid,
    stripe_settings,
    subscription_started,
)

PRICES = {"price_starter": "starter", "price_pro": "pro", "price_business": "business"}
SIGNUP_CREDITS = 50


@pytest.fixture
def settings(make_settings: Any, fresh_database: None, stripe_peer: Any) -> Settings:
    return stripe_settings(make_settings, stripe_peer, stripe_price_plans=PRICES)


async def credits(client: httpx.AsyncClient, account: Any) -> int:
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    return int(me["credits"]) - SIGNUP_CREDITS


async def on_business(client: httpx.AsyncClient, signup: Any) -> Any:
    account = await signup()
    await deliver(client, subscription_started(account.id, "sub_1", plan="business"))
    await deliver(client, invoice_paid(account.id, plan="business", amount=19_900))
    assert await credits(client, account) == 50_000
    return account


def moved_to(account: Any, price: str) -> dict[str, Any]:
    """`customer.subscription.updated` after a change in the portal: the price moved, the
    metadata still names the first plan."""
    return event(
        "customer.subscription.updated",
        {
            "id": "sub_1",
            "object": "subscription",
            "customer": "cus_test1",
            "status": "active",
            "metadata": {"user_id": account.id, "plan": "business"},
            "items": {"data": [{"price": {"id": price, "lookup_key": None}}]},
        },
    )


async def test_a_downgrade_grants_the_new_plans_credits_from_the_next_invoice(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await on_business(client, signup)
    await deliver(client, moved_to(account, "price_starter"))
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["plan"] == "starter"
    await deliver(
        client,
        invoice_paid(
            account.id, plan="business", amount=1_900, lines=[invoice_line("starter", 1_900)]
        ),
    )
    assert await credits(client, account) == 50_000 + 2_000
    async with runtime.db.read() as session:
        products = (
            await session.scalars(select(Payment.product).order_by(Payment.created_at))
        ).all()
    assert list(products) == ["business", "starter"]


async def test_an_upgrade_invoice_grants_the_bigger_plan_even_before_the_subscription_event(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    await deliver(client, subscription_started(account.id, "sub_1", plan="starter"))
    await deliver(client, invoice_paid(account.id, plan="starter", amount=1_900))
    # The invoice of the new plan arrives before `customer.subscription.updated`.
    await deliver(
        client,
        invoice_paid(
            account.id, plan="starter", amount=19_900, lines=[invoice_line("business", 19_900)]
        ),
    )
    assert await credits(client, account) == 2_000 + 50_000


async def test_an_upgrade_midway_grants_the_difference_pro_rata_at_once(
    client: httpx.AsyncClient, signup: Any
) -> None:
    """Starter → business halfway through the month, invoiced at once: half a month of
    starter given back (-1,000 credits), half of business charged (+25,000)."""
    account = await signup()
    await deliver(client, subscription_started(account.id, "sub_1", plan="starter"))
    await deliver(client, invoice_paid(account.id, plan="starter", amount=1_900))
    proration = [
        invoice_line("starter", -950, proration=True),
        invoice_line("business", 9_950, proration=True),
    ]
    await deliver(client, invoice_paid(account.id, plan="starter", amount=9_000, lines=proration))
    assert await credits(client, account) == 2_000 + 24_000


async def test_a_downgrade_midway_takes_nothing_back_and_the_next_month_is_the_new_plans(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    """The unused half of business outweighs the rest: the invoice comes to less than
    nothing (Stripe keeps it as the customer's balance) and takes no money; it still
    bills a month of starter, so starter's credits come, and none are taken back."""
    account = await on_business(client, signup)
    lines = [
        invoice_line("business", -9_950, proration=True),
        invoice_line("starter", 950, proration=True),
        invoice_line("starter", 1_900),
    ]
    await deliver(client, invoice_paid(account.id, plan="business", amount=0, lines=lines))
    assert await credits(client, account) == 50_000 + 2_000
    async with runtime.db.read() as session:
        last = await session.scalar(select(Payment).order_by(Payment.created_at.desc()))
    assert last is not None
    assert (last.product, last.amount_cents, last.credits) == ("starter", 0, 2_000)


async def test_a_trial_invoice_grants_nothing(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    await deliver(client, subscription_started(account.id, "sub_1", plan="pro"))
    await deliver(
        client, invoice_paid(account.id, plan="pro", amount=0, lines=[invoice_line("pro", 0)])
    )
    assert await credits(client, account) == 0
