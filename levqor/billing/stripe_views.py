"""Typed views of the Stripe objects billing reads from webhook events.

Stripe sends plain JSON, and the same fact sits in different places across API versions:
since 2025-03-31 an invoice names its subscription under `parent.subscription_details`
and its payment intent under `payments`, and a subscription's period end moved onto its
items. Each view reads both shapes once, here, so the event handlers (`webhooks.py`) see
one frozen value with the fields they need and no dictionary digging.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from levqor.billing import plans
from levqor.billing.service import LIVE_STATUSES

Json = dict[str, Any]
PricePlans = dict[str, str]  # Stripe price id -> plan name


def from_unix(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _text(value: Any) -> str | None:
    return str(value) if value else None


@dataclass(frozen=True)
class Owner:
    """Who a Stripe object is about: the user our metadata (or the checkout's client
    reference) names, else the Stripe customer to look up."""

    user_id: str | None
    customer: str | None
    kind: str | None
    object_id: str | None

    @classmethod
    def of(cls, obj: Json, metadata: Json | None = None) -> Owner:
        if metadata is None:
            metadata = obj.get("metadata") or {}
        user_id = metadata.get("user_id") or obj.get("client_reference_id")
        return cls(_text(user_id), _text(obj.get("customer")), obj.get("object"), obj.get("id"))


@dataclass(frozen=True)
class Checkout:
    id: str
    owner: Owner
    mode: str | None
    subscription_id: str | None
    customer: str | None
    plan: str | None
    pack: str | None
    paid: bool
    amount_cents: int
    currency: str | None
    payment_intent: str | None

    @classmethod
    def of(cls, obj: Json) -> Checkout:
        metadata = obj.get("metadata") or {}
        return cls(
            id=obj["id"],
            owner=Owner.of(obj),
            mode=obj.get("mode"),
            subscription_id=_text(obj.get("subscription")),
            customer=_text(obj.get("customer")),
            plan=metadata.get("plan"),
            pack=metadata.get("pack"),
            paid=obj.get("payment_status") == "paid",
            amount_cents=int(obj.get("amount_total") or 0),
            currency=_text(obj.get("currency")),
            payment_intent=obj.get("payment_intent"),
        )


@dataclass(frozen=True)
class InvoiceLine:
    """One line of an invoice: what it bills (the plan its price names, if any), for
    how much, and whether it is a proration (a plan changed mid-period)."""

    plan: str | None
    amount_cents: int
    proration: bool

    @classmethod
    def of(cls, line: Json, price_plans: PricePlans) -> InvoiceLine:
        parent = line.get("parent") or {}
        details = parent.get("subscription_item_details") or parent.get("invoice_item_details")
        proration = (details or {}).get("proration", line.get("proration"))
        return cls(
            plan=_plan_of_price(_line_price(line), price_plans),
            amount_cents=int(line.get("amount") or 0),
            proration=bool(proration),
        )


@dataclass(frozen=True)
class Invoice:
    id: str
    owner: Owner
    subscription_id: str | None
    plan: str | None  # what our metadata says: the plan bought at checkout
    lines: tuple[InvoiceLine, ...]
    number: str | None
    amount_paid_cents: int
    currency: str | None
    period_start: datetime | None
    period_end: datetime | None
    payment_intent: str | None

    @classmethod
    def of(cls, obj: Json, price_plans: PricePlans) -> Invoice:
        details = subscription_details(obj)
        metadata = details.get("metadata") or {}
        start, end = _service_period(obj)
        return cls(
            id=obj["id"],
            owner=Owner.of(obj, metadata),
            subscription_id=_text(details.get("subscription") or obj.get("subscription")),
            plan=metadata.get("plan"),
            lines=tuple(
                InvoiceLine.of(line, price_plans)
                for line in (obj.get("lines") or {}).get("data") or []
            ),
            number=obj.get("number"),
            amount_paid_cents=int(obj.get("amount_paid") or 0),
            currency=_text(obj.get("currency")),
            period_start=start,
            period_end=end,
            payment_intent=_payment_intent(obj),
        )

    def billed_plan(self) -> str | None:
        """The plan this invoice bills for the period ahead: its first line that is not
        a proration and whose price names a plan."""
        for line in self.lines:
            if not line.proration and line.plan is not None:
                return line.plan
        return None


@dataclass(frozen=True)
class StripeSubscription:
    id: str
    owner: Owner
    customer: str | None
    status: str
    plan: str | None
    price_plan: str | None
    cancel_at_period_end: bool
    current_period_end: datetime | None

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @classmethod
    def of(cls, obj: Json, price_plans: PricePlans) -> StripeSubscription:
        item = _first_item(obj)
        return cls(
            id=obj["id"],
            owner=Owner.of(obj),
            customer=_text(obj.get("customer")),
            status=str(obj.get("status") or "active"),
            plan=(obj.get("metadata") or {}).get("plan"),
            price_plan=_plan_of_price(item.get("price"), price_plans),
            cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
            current_period_end=from_unix(
                obj.get("current_period_end") or item.get("current_period_end")
            ),
        )


@dataclass(frozen=True)
class MoneyBack:
    """A refund or a dispute: which payment (our metadata, else its intent), how much.
    `reason` is Stripe's (a dispute's network reason); `note` the one our metadata gives."""

    id: str
    payment_id: str | None
    payment_intent: str | None
    amount_cents: int
    status: str | None
    reason: str | None
    note: str | None

    @classmethod
    def of(cls, obj: Json) -> MoneyBack:
        metadata = obj.get("metadata") or {}
        return cls(
            id=obj["id"],
            payment_id=_text(metadata.get("payment_id")),
            payment_intent=_text(obj.get("payment_intent")),
            amount_cents=int(obj.get("amount") or 0),
            status=obj.get("status"),
            reason=obj.get("reason"),
            note=metadata.get("reason"),
        )


def billing_subscription(event: Json) -> tuple[str | None, str | None]:
    """The subscription an event says bills on, and the user our metadata names."""
    obj = (event.get("data") or {}).get("object") or {}
    kind = event.get("type")
    details = subscription_details(obj)
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription":
        subscription = obj.get("subscription")
    elif kind in ("customer.subscription.created", "customer.subscription.updated"):
        subscription = obj.get("id") if obj.get("status") in LIVE_STATUSES else None
    elif kind == "invoice.paid":
        subscription = details.get("subscription") or obj.get("subscription")
    else:
        return None, None
    metadata = obj.get("metadata") or details.get("metadata") or {}
    user_id = metadata.get("user_id") or obj.get("client_reference_id")
    return _text(subscription), _text(user_id)


def subscription_details(obj: Json) -> Json:
    details = (obj.get("parent") or {}).get("subscription_details")
    return details or obj.get("subscription_details") or {}


def _payment_intent(invoice: Json) -> str | None:
    if invoice.get("payment_intent"):
        return str(invoice["payment_intent"])
    for paid in (invoice.get("payments") or {}).get("data") or []:
        intent = (paid.get("payment") or {}).get("payment_intent")
        if intent:
            return str(intent)
    return None


def _service_period(invoice: Json) -> tuple[datetime | None, datetime | None]:
    lines = (invoice.get("lines") or {}).get("data") or []
    period = (lines[0].get("period") if lines else None) or {
        "start": invoice.get("period_start"),
        "end": invoice.get("period_end"),
    }
    return from_unix(period.get("start")), from_unix(period.get("end"))


def _plan_of_price(price: Any, price_plans: PricePlans) -> str | None:
    """The plan a price stands for: by the operator's price → plan map
    (`LEVQOR_STRIPE_PRICE_PLANS`), else by a lookup key named like a plan. This is how a
    plan changed in Stripe's customer portal is known: the subscription's metadata keeps
    the plan bought at checkout. `price` is an id or a price object."""
    if isinstance(price, dict):
        price_id, lookup_key = price.get("id"), price.get("lookup_key")
    else:
        price_id, lookup_key = price, None
    plan = price_plans.get(str(price_id)) if price_id else None
    plan = plan or lookup_key
    return plan if plan in plans.PLANS else None


def _line_price(line: Json) -> Any:
    """An invoice line's price: an id under `pricing` since API 2025-03-31, an object
    under `price` (or a legacy `plan`) before."""
    details = (line.get("pricing") or {}).get("price_details") or {}
    return details.get("price") or line.get("price") or line.get("plan")


def _first_item(subscription: Json) -> Json:
    items = (subscription.get("items") or {}).get("data") or []
    return items[0] if items else {}
