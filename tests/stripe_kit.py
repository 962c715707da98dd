"""A Stripe stand-in for tests: a loopback HTTP peer answering the calls Levqor makes,
and webhook events signed the way Stripe signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from levqor.config import Settings

WEBHOOK_SECRET = "whsec_" + "k" * 32


def stripe_settings(make_settings: Any, peer: Any, **overrides: Any) -> Settings:
    built: Settings = make_settings(
        stripe_secret_key="sk_test_" + "s" * 24,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=peer.url,
        **overrides,
    )
    return built


def answer_like_stripe(peer: Any) -> None:
    """Fixed answers for every object Levqor creates or cancels."""
    peer.route("POST", "/v1/customers", 200, {"id": "cus_test1", "object": "customer"})
    peer.route(
        "POST",
        "/v1/checkout/sessions",
        200,
        {"id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.test/cs_1"},
    )
    peer.route("POST", "/v1/refunds", 200, {"id": "re_test_1", "object": "refund"})
    peer.route("POST", "/v1/transfers", 200, {"id": "tr_test_1", "object": "transfer"})
    peer.route("DELETE", "/v1/subscriptions/", 200, {"id": "sub_x", "object": "subscription"})
    peer.route("POST", "/v1/accounts", 200, {"id": "acct_test1", "object": "account"})
    peer.route(
        "POST",
        "/v1/account_links",
        200,
        {"object": "account_link", "url": "https://connect.test/onboarding"},
    )
    empty = {"object": "list", "data": [], "has_more": False}
    peer.route("GET", "/v1/events", 200, empty | {"url": "/v1/events"})
    peer.route("GET", "/v1/transfers", 200, empty | {"url": "/v1/transfers"})


@pytest.fixture
def stripe_peer() -> Iterator[Any]:
    """Stripe on loopback, with Stripe's idempotency: a POST without a key is refused,
    and a key seen before gets its first answer back (500s included)."""
    from tests.peers import HttpPeer

    peer = HttpPeer()
    peer.idempotent = True
    answer_like_stripe(peer)
    peer.start()
    yield peer
    peer.stop()


def signature(payload: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    signed = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={signed.hexdigest()}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": kind,
        "data": {"object": obj},
    }


async def deliver(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    payload = json.dumps(body).encode()
    return await client.post(
        "/api/v1/billing/webhook",
        content=payload,
        headers={"stripe-signature": signature(payload), "content-type": "application/json"},
    )


def pack_paid(user_id: str, *, pack: str = "credits_1k", amount: int = 1000) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    return event(
        "checkout.session.completed",
        {
            "id": f"cs_{suffix}",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "amount_total": amount,
            "currency": "usd",
            "customer": "cus_test1",
            "client_reference_id": user_id,
            "metadata": {"user_id": user_id, "pack": pack},
            "payment_intent": f"pi_{suffix}",
        },
    )


def invoice_paid(
    user_id: str | None,
    *,
    subscription: str = "sub_1",
    plan: str = "pro",
    amount: int = 4900,
    lines: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An invoice as API versions since 2025-03-31 send it (`parent`, `payments`,
    `pricing`). `plan` is the checkout's metadata; by default one line bills the period
    at the price `price_<plan>`."""
    suffix = uuid.uuid4().hex[:8]
    metadata = {"plan": plan} | ({"user_id": user_id} if user_id else {})
    return event(
        "invoice.paid",
        {
            "id": f"in_{suffix}",
            "object": "invoice",
            "customer": "cus_test1",
            "number": f"LEV-{suffix}",
            "amount_paid": amount,
            "currency": "usd",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription, "metadata": metadata},
            },
            "payments": {"data": [{"payment": {"payment_intent": f"pi_{suffix}"}}]},
            "lines": {"data": lines or [invoice_line(plan, amount)]},
        },
    )


def invoice_line(plan: str, amount: int, *, proration: bool = False) -> dict[str, Any]:
    """A line of a subscription invoice billing `plan`'s price (`price_<plan>`)."""
    return {
        "object": "line_item",
        "amount": amount,
        "currency": "usd",
        "period": {"start": 1_790_000_000, "end": 1_792_592_000},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {"proration": proration, "subscription": "sub_1"},
        },
        "pricing": {"type": "price_details", "price_details": {"price": f"price_{plan}"}},
    }


def subscription_started(user_id: str, subscription: str, *, plan: str = "pro") -> dict[str, Any]:
    """The checkout of a plan, completed."""
    return event(
        "checkout.session.completed",
        {
            "id": f"cs_{subscription}",
            "object": "checkout.session",
            "mode": "subscription",
            "customer": "cus_test1",
            "subscription": subscription,
            "metadata": {"user_id": user_id, "plan": plan},
        },
    )
