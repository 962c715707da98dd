"""Billing from the dashboard, against the loopback Stripe peer: a pack bought through
Checkout, the portal for a customer, the ledger."""

from __future__ import annotations

import re
from typing import Any

import pytest

from levqor.config import Settings
from tests.conftest import serve_app
from tests.factories import signed_in
from tests.stripe_kit import answer_like_stripe, stripe_settings


@pytest.fixture
def billing(make_settings: Any, fresh_database: None, http_peer: Any) -> Settings:
    answer_like_stripe(http_peer)
    return stripe_settings(make_settings, http_peer)


async def test_buying_a_pack_links_to_stripe_checkout(billing: Settings, http_peer: Any) -> None:
    async with serve_app(billing) as (client, _runtime):
        token = await signed_in(client, "buyer@example.com")
        page = await client.get("/app/billing")
        assert page.status_code == 200
        pack = re.search(r'name="pack" value="(\w+)"', page.text)
        assert pack
        assert "signup grant" in page.text  # the ledger's first row
        answer = await client.post(
            "/app/billing/checkout", data={"csrf_token": token, "pack": pack.group(1)}
        )
    assert answer.status_code == 200  # a page with the link: the CSP forbids a redirect
    assert 'href="https://checkout.test/cs_1"' in answer.text
    created = [r for r in http_peer.requests if r["path"] == "/v1/checkout/sessions"]
    assert len(created) == 1


async def test_the_portal_before_any_purchase_says_there_is_nothing_to_manage(
    billing: Settings,
) -> None:
    async with serve_app(billing) as (client, _runtime):
        token = await signed_in(client, "nothing@example.com")
        answer = await client.post("/app/billing/portal", data={"csrf_token": token})
    assert answer.status_code == 404  # no Stripe customer yet
    assert "nothing to manage" in answer.text
