"""Partner routes: joining, the partner's own figures, the referral link, payouts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from levqor import errors
from levqor.accounts.api_deps import (
    AdminUser,
    AdminUserAutocommit,
    AnonymousLimit,
    CurrentUser,
    CurrentUserAutocommit,
    client_ip,
)
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.partners import fraud, service
from levqor.partners.models import Referral
from levqor.types import JsonInt

router = APIRouter(prefix="/api/v1/partners", tags=["partners"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
link_router = APIRouter(include_in_schema=False)


class JoinIn(BaseModel):
    """Nothing to give: the Stripe account for payouts is made through
    `POST /api/v1/partners/me/connect`."""

    model_config = ConfigDict(extra="forbid")


class PartnerOut(BaseModel):
    id: str
    code: str
    link: str


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors.documented(409))
async def join(
    principal: CurrentUser, session: SessionDep, runtime: RuntimeDep, body: JoinIn | None = None
) -> PartnerOut:
    """Join the partner program: a referral code and link of your own."""
    partner = await service.join(session, user_id=principal.user.id, settings=runtime.settings)
    return PartnerOut(
        id=partner.id, code=partner.code, link=service.link(runtime.settings, partner.code)
    )


class CommissionTotals(BaseModel):
    pending: int
    approved: int
    paid: int
    held: int = 0  # its referral flagged by the fraud guard, under review


class PayoutRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    amount_cents: int
    currency: str
    status: str
    transfer_id: str | None = None  # Stripe's, once paid
    created_at: datetime


class PartnerMe(BaseModel):
    id: str
    code: str
    link: str
    payout_account: str | None
    payouts_enabled: bool  # Stripe lets payouts go to the account
    commission_percent: float
    clicks: int
    signups: int
    conversions: int
    commission_cents: CommissionTotals
    payouts: list[PayoutRead]


@router.get("/me")
async def me(principal: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep) -> PartnerMe:
    """Your clicks, signups, paying referrals, commission (pending in the hold period,
    approved to pay, paid) in cents, and payouts."""
    found = await service.summary(session, user_id=principal.user.id, settings=runtime.settings)
    return PartnerMe(
        id=found.partner.id,
        code=found.partner.code,
        link=found.link,
        payout_account=found.partner.payout_account,
        payouts_enabled=found.partner.payouts_enabled,
        commission_percent=found.partner.commission_bp / 100,
        clicks=found.clicks,
        signups=found.signups,
        conversions=found.conversions,
        commission_cents=CommissionTotals(**found.commission),
        payouts=[PayoutRead.model_validate(payout) for payout in found.payouts],
    )


@link_router.get("/r/{code}", dependencies=[AnonymousLimit])
async def referral_link(
    code: str, request: Request, session: SessionDep, runtime: RuntimeDep
) -> RedirectResponse:
    """Count the click (once a day per visitor), remember the code in a cookie for the
    signup, and go to the landing page. An unknown code just goes to the landing page."""
    answer = RedirectResponse("/", status_code=status.HTTP_302_FOUND)
    partner = await service.find_by_code(session, code.lower()) if len(code) <= 32 else None
    if partner is None:
        return answer
    await service.count_click(
        session, partner=partner, ip=client_ip(request), settings=runtime.settings
    )
    answer.set_cookie(
        service.REFERRAL_COOKIE,
        partner.code,
        max_age=runtime.settings.partner_cookie_days * 86_400,
        httponly=True,
        samesite="lax",
        secure=runtime.settings.public_url.startswith("https://"),
    )
    return answer


class PayoutRunOut(BaseModel):
    payouts: list[PayoutRead]


@admin_router.post("/payouts/run")
async def run_payouts(admin: AdminUserAutocommit, runtime: RuntimeDep) -> PayoutRunOut:
    """Pay every partner whose approved commission reaches the minimum."""
    done = await service.run_payouts(runtime, actor=admin.user.id)
    return PayoutRunOut(payouts=[PayoutRead.model_validate(payout) for payout in done])


class SignalRead(BaseModel):
    name: str
    weight: int
    detail: str


class ReferralRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The referral's id: the referred user's id.")
    partner_id: str
    user_id: str
    at: datetime
    score: int
    signals: list[SignalRead]
    status: Literal["ok", "flagged", "approved", "rejected"]
    decided_by: str | None
    decided_at: datetime | None

    @classmethod
    def of(cls, referral: Referral) -> ReferralRead:
        return cls(
            id=referral.user_id,
            partner_id=referral.partner_id,
            user_id=referral.user_id,
            at=referral.at,
            score=referral.score,
            signals=[SignalRead(**signal) for signal in referral.signals],
            status=cast(Any, referral.status),
            decided_by=referral.decided_by,
            decided_at=referral.decided_at,
        )


class ReferralPage(BaseModel):
    data: list[ReferralRead]


@admin_router.get("/referrals")
async def list_referrals(
    _admin: AdminUser,
    session: ReadSessionDep,
    status: Annotated[
        Literal["ok", "flagged", "approved", "rejected"] | None, Query(description="Only these.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReferralPage:
    """Referred signups, newest first, with the fraud guard's score and signals."""
    found = await fraud.referrals(session, status=status, limit=limit)
    return ReferralPage(data=[ReferralRead.of(referral) for referral in found])


@admin_router.post("/referrals/{referral_id}/approve", responses=errors.documented(404, 409))
async def approve_referral(referral_id: str, admin: AdminUser, session: SessionDep) -> ReferralRead:
    """A flagged referral is genuine: its held commissions become payable (audited)."""
    decided = await fraud.decide(session, user_id=referral_id, approve=True, admin_id=admin.user.id)
    return ReferralRead.of(decided)


@admin_router.post("/referrals/{referral_id}/reject", responses=errors.documented(404, 409))
async def reject_referral(referral_id: str, admin: AdminUser, session: SessionDep) -> ReferralRead:
    """A flagged referral is fraud: its commissions are void, now and later (audited)."""
    decided = await fraud.decide(
        session, user_id=referral_id, approve=False, admin_id=admin.user.id
    )
    return ReferralRead.of(decided)


class ConnectOut(BaseModel):
    url: str = Field(description="Stripe's onboarding page: single use, valid for minutes.")
    account_id: str
    payouts_enabled: bool


@router.post("/me/connect", responses=errors.documented(404, 502))
async def connect(principal: CurrentUserAutocommit, runtime: RuntimeDep) -> ConnectOut:
    """Set up payouts: your Stripe Express account (created once) and a fresh link to
    Stripe's onboarding; payouts start when Stripe says the account can receive them."""
    link = await service.connect(runtime, user_id=principal.user.id)
    return ConnectOut(
        url=link.url, account_id=link.account_id, payouts_enabled=link.payouts_enabled
    )


class CommissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commission_bp: JsonInt = Field(ge=0, le=10_000, description="Basis points of each payment.")


class PartnerRateOut(BaseModel):
    id: str
    commission_percent: float


@admin_router.put("/partners/{partner_id}/commission", responses=errors.documented(404))
async def set_commission(
    partner_id: str, body: CommissionIn, admin: AdminUser, session: SessionDep
) -> PartnerRateOut:
    """One partner's commission rate, from now on (audited)."""
    partner = await service.set_commission(
        session, partner_id=partner_id, commission_bp=body.commission_bp, admin_id=admin.user.id
    )
    return PartnerRateOut(id=partner.id, commission_percent=partner.commission_bp / 100)
