"""Billing routes: thin; parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from levqor.accounts.api_deps import (
    AdminUser,
    AdminUserAutocommit,
    CurrentUser,
    CurrentUserAutocommit,
)
from levqor.billing import plans, refunds, reports, service, webhooks
from levqor.billing.plans import FREE, PACKS, PLANS
from levqor.deps import ReadSessionDep, RuntimeDep

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class PlanRead(BaseModel):
    name: str
    title: str
    price_cents: int
    currency: str
    interval: str
    credits_per_month: int


class PackRead(BaseModel):
    name: str
    title: str
    price_cents: int
    currency: str
    credits: int


class Catalogue(BaseModel):
    plans: list[PlanRead]
    packs: list[PackRead]


@router.get("/plans")
async def list_plans(runtime: RuntimeDep) -> Catalogue:
    """What can be bought: monthly plans and one-off credit packs, prices in cents."""
    currency = runtime.settings.billing_currency
    return Catalogue(
        plans=[
            PlanRead(**vars(plan), currency=currency, interval="month")
            for plan in plans.PLANS.values()
        ],
        packs=[PackRead(**vars(pack), currency=currency) for pack in plans.PACKS.values()],
    )


class CheckoutIn(BaseModel):
    """A plan to subscribe to, or a credit pack to buy: one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["plan"]}, {"required": ["pack"]}]},
    )

    plan: str | None = Field(
        None, json_schema_extra={"enum": [name for name in PLANS if name != FREE]}
    )
    pack: str | None = Field(None, json_schema_extra={"enum": list(PACKS)})


class CheckoutOut(BaseModel):
    url: str
    session_id: str


@router.post("/checkout", status_code=status.HTTP_201_CREATED)
async def checkout(
    body: CheckoutIn, principal: CurrentUserAutocommit, runtime: RuntimeDep
) -> CheckoutOut:
    """A Stripe Checkout page for a plan or a credit pack. Credits arrive when Stripe
    confirms the payment (webhook), not before."""
    session_id, url = await service.checkout(
        runtime, user=principal.user, plan=body.plan, pack=body.pack
    )
    return CheckoutOut(url=url, session_id=session_id)


class PortalOut(BaseModel):
    url: str


@router.post("/portal", status_code=status.HTTP_201_CREATED)
async def portal(principal: CurrentUserAutocommit, runtime: RuntimeDep) -> PortalOut:
    """A Stripe customer portal page: change or cancel your plan, update your card,
    download invoices. Changes come back through Stripe's webhooks."""
    return PortalOut(url=await service.portal(runtime, user=principal.user))


class WebhookOut(BaseModel):
    received: bool
    duplicate: bool


@router.post("/webhook")
async def stripe_webhook(request: Request, runtime: RuntimeDep) -> WebhookOut:
    """Stripe's events. The signature is checked; each event id is applied once."""
    applied = await webhooks.receive(
        runtime, payload=await request.body(), signature=request.headers.get("stripe-signature")
    )
    return WebhookOut(received=True, duplicate=not applied)


@router.get("/usage")
async def usage(
    principal: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep
) -> service.Usage:
    """This month (UTC): your plan, credits left, runs charged and what they cost, money
    paid (net of refunds)."""
    return await service.usage(
        session, user=principal.user, currency=runtime.settings.billing_currency
    )


class CreditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    delta: int
    balance_after: int
    reason: str
    job_id: str | None
    owed_after: int | None = None  # on rows that change the credits owed


class LedgerPage(BaseModel):
    data: list[CreditEntryRead]
    next_cursor: str | None


@router.get("/ledger")
async def ledger(
    principal: CurrentUser,
    session: ReadSessionDep,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, pattern="^[0-9]{1,19}$"),
) -> LedgerPage:
    """Your credit ledger, newest first: every grant, purchase and run that changed your
    balance, with the balance it left."""
    entries = await service.ledger(
        session,
        user_id=principal.user.id,
        before=int(cursor) if cursor else None,
        limit=limit + 1,
    )
    page = entries[:limit]
    more = len(entries) > limit
    return LedgerPage(
        data=[CreditEntryRead.model_validate(entry) for entry in page],
        next_cursor=str(page[-1].id) if more else None,
    )


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_id: str = Field(max_length=32)
    amount: int | None = Field(None, ge=1, description="Cents; the whole remainder if left out.")
    reason: str = Field(min_length=1, max_length=500)


class RefundOut(BaseModel):
    id: str
    payment_id: str
    amount_cents: int
    currency: str
    credits_reversed: int
    commission_reversed_cents: int
    created_at: datetime


@admin_router.post("/refunds", status_code=status.HTTP_201_CREATED)
async def refund(
    body: RefundIn,
    admin: AdminUserAutocommit,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> RefundOut:
    """Refund a payment through Stripe; its credits and partner commission are taken back.
    Send an `Idempotency-Key` to retry safely: the same key refunds once."""
    issued = await refunds.issue(
        runtime,
        payment_id=body.payment_id,
        amount_cents=body.amount,
        reason=body.reason,
        admin_id=admin.user.id,
        request_key=idempotency_key,
    )
    found = issued.refund
    return RefundOut(
        id=found.id,
        payment_id=found.payment_id,
        amount_cents=found.amount_cents,
        currency=found.currency,
        credits_reversed=found.credits_reversed,
        commission_reversed_cents=issued.commission_reversed_cents,
        created_at=found.created_at,
    )


@admin_router.get("/costs")
async def costs(_admin: AdminUser, session: ReadSessionDep, runtime: RuntimeDep) -> reports.Costs:
    """Today's and this month's costs by source (Stripe fees, LLM calls, infra) and the
    paying users it takes to cover the month."""
    return await reports.costs(session, settings=runtime.settings)
