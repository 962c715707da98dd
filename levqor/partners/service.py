"""Partner program logic: codes and links, clicks, attribution, commissions, payouts.

Fraud guard (`fraud.py`): each referred signup is scored, and a flagged one's commissions
are held for an admin's decision. A visitor (a keyed hash of the IP) counts as one click
a day per partner; a commission is held for
`LEVQOR_PARTNER_HOLD_DAYS` so refunds and chargebacks come before the money goes out;
a refund or chargeback takes its share of commission back as a negative commission,
which the payout that carries the commission (or, once paid, the next one) nets out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts import service as accounts
from levqor.accounts.events import UserSignedUp
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.audit.models import AuditEntry
from levqor.billing import service as billing
from levqor.billing.events import (
    ConnectAccountUpdated,
    PaymentLost,
    PaymentRecorded,
    PaymentRegained,
)
from levqor.billing.gateway import StripeGateway, StripeUnavailable
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger
from levqor.partners import fraud
from levqor.partners.models import Commission, Partner, Payout, Referral, ReferralClick
from levqor.periodic import TickTask, at_most_every

if TYPE_CHECKING:
    from levqor.runtime import Runtime

log = get_logger("levqor.partners")

CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)
CLICK_WINDOW = timedelta(days=1)
REFERRAL_COOKIE = accounts.REFERRAL_COOKIE
# Stripe may forget an idempotency key (and its saved answer) 24 hours after first use;
# a payout unsettled that long is looked up by its transfer group before it is sent again.
KEYS_KEPT = timedelta(hours=23)
PAYOUTS_RUN = "payouts_run"  # every run leaves one audit row
SCHEDULER = "scheduler"


class AlreadyPartner(errors.Conflict):
    code = "already_partner"


class NotPartner(errors.NotFound):
    code = "not_a_partner"


def link(settings: Settings, code: str) -> str:
    return f"{settings.public_url}/r/{code}"


async def join(session: AsyncSession, *, user_id: str, settings: Settings) -> Partner:
    """Join the program: a code of one's own. Payouts need a Stripe account, made
    through `connect` (a partner cannot name an arbitrary one)."""
    if await session.scalar(select(Partner.id).where(Partner.user_id == user_id)):
        raise AlreadyPartner("You are in the partner program already.")
    partner = Partner(
        user_id=user_id,
        code="".join(secrets.choice(CODE_ALPHABET) for _ in range(10)),
        commission_bp=settings.partner_commission_bp,
        payouts_enabled=False,
    )
    session.add(partner)
    await audit.record(session, actor=user_id, action="partner_joined", object_id=partner.id)
    return partner


@dataclass(frozen=True)
class ConnectLink:
    url: str  # Stripe's onboarding page, single use, valid for minutes
    account_id: str
    payouts_enabled: bool


async def connect(runtime: Runtime, *, user_id: str) -> ConnectLink:
    """Stripe Connect onboarding: the partner's Express account, created once, and a
    fresh link to Stripe's onboarding for it. Payouts start when Stripe says the
    account can receive them (`account.updated`)."""
    async with runtime.db.session(write=False) as session:
        partner = await session.scalar(select(Partner).where(Partner.user_id == user_id))
        owner = await session.get(User, user_id)
    if partner is None or owner is None:
        raise NotPartner("You are not in the partner program; POST /api/v1/partners to join.")
    account_id = partner.payout_account
    if account_id is None:
        account_id = await runtime.stripe.create_connect_account(
            partner_id=partner.id, email=owner.email
        )
        async with runtime.db.session(write=True) as session, session.begin():
            await session.execute(
                update(Partner)
                .where(Partner.id == partner.id, Partner.payout_account.is_(None))
                .values(payout_account=account_id, payouts_enabled=False)
            )
            await audit.record(
                session,
                actor=user_id,
                action="partner_connect_created",
                object_id=user_id,
                detail={"partner_id": partner.id, "account_id": account_id},
            )
    base = f"{runtime.settings.public_url}/app/partner"
    url = await runtime.stripe.onboarding_link(
        account_id=account_id, refresh_url=f"{base}?connect=again", return_url=base
    )
    return ConnectLink(
        url, account_id, partner.payouts_enabled and partner.payout_account == account_id
    )


async def on_account_updated(session: AsyncSession, *, updated: ConnectAccountUpdated) -> None:
    """Stripe's word on a partner's account: payouts go to it only while enabled."""
    partner = await session.scalar(
        select(Partner).where(Partner.payout_account == updated.account_id).with_for_update()
    )
    if partner is None or partner.payouts_enabled == updated.payouts_enabled:
        return
    partner.payouts_enabled = updated.payouts_enabled
    await audit.record(
        session,
        actor="stripe",
        action="partner_payouts_enabled" if updated.payouts_enabled else "partner_payouts_disabled",
        object_id=partner.user_id,
        detail={"partner_id": partner.id, "account_id": updated.account_id},
    )


async def set_commission(
    session: AsyncSession, *, partner_id: str, commission_bp: int, admin_id: str
) -> Partner:
    """An admin's rate for one partner (basis points of each payment), audited; it
    applies to payments from now on."""
    partner = await session.get(Partner, partner_id, with_for_update=True)
    if partner is None:
        raise errors.NotFound(f"No partner {partner_id}.")
    before, partner.commission_bp = partner.commission_bp, commission_bp
    await audit.record(
        session,
        actor=admin_id,
        action="partner_commission_changed",
        object_id=partner.user_id,
        detail={"partner_id": partner.id, "from_bp": before, "to_bp": commission_bp},
    )
    return partner


async def find_by_code(session: AsyncSession, code: str) -> Partner | None:
    found: Partner | None = await session.scalar(select(Partner).where(Partner.code == code))
    return found


async def count_click(
    session: AsyncSession, *, partner: Partner, ip: str, settings: Settings
) -> bool:
    """Count a visit, once a day per visitor (a keyed hash of the IP, never the IP);
    True if it counted."""
    key = settings.blind_index_key
    assert key is not None  # load_settings always fills it
    visitor_hash = audit.hash_ip(key.get_secret_value(), ip) or "unknown"
    since = utcnow() - CLICK_WINDOW
    seen = await session.scalar(
        select(ReferralClick.id)
        .where(
            ReferralClick.partner_id == partner.id,
            ReferralClick.visitor_hash == visitor_hash,
            ReferralClick.at >= since,
        )
        .limit(1)
    )
    if seen is not None:
        return False
    session.add(ReferralClick(partner_id=partner.id, visitor_hash=visitor_hash))
    return True


async def attribute(
    session: AsyncSession, *, signed_up: UserSignedUp, settings: Settings
) -> Referral | None:
    """Credit a new account's signup to the partner whose code brought it (body `ref` or
    the referral cookie), scored by the fraud guard; an unknown code is ignored."""
    code = signed_up.referral_code
    if not code:
        return None
    partner = await find_by_code(session, code.strip().lower())
    if partner is None:
        return None
    signals = await fraud.signup_signals(session, partner=partner, signed_up=signed_up)
    referral = Referral(
        user_id=signed_up.user_id,
        partner_id=partner.id,
        ip_hash=signed_up.ip_hash,
        signals=[],
        score=0,
        status=fraud.OK,
    )
    session.add(referral)
    await fraud.judge(session, referral, signals, settings=settings)
    return referral


async def on_payment(
    session: AsyncSession, *, payment: PaymentRecorded, settings: Settings
) -> None:
    """The referring partner's commission on a payment (none if the payer came alone):
    held while the fraud guard has the referral flagged, none once it was rejected. A
    first payment very soon after the signup is a signal of its own."""
    referral = await session.scalar(
        select(Referral).where(Referral.user_id == payment.user_id).with_for_update()
    )
    partner = await session.get(Partner, referral.partner_id) if referral else None
    if referral is None or partner is None:
        return
    count, first = await billing.payments_so_far(session, user_id=payment.user_id)
    if count <= 1:
        fast = fraud.purchase_signal(referral, utcnow())
        await fraud.judge(session, referral, [fast] if fast else [], settings=settings)
    if not _within_terms(first, settings=settings):
        return
    amount = payment.amount_cents * partner.commission_bp // 10_000
    status = fraud.commission_status(referral)
    if amount <= 0 or status == "void":
        return
    session.add(
        Commission(
            partner_id=partner.id,
            user_id=partner.user_id,
            payment_id=payment.payment_id,
            amount_cents=amount,
            currency=payment.currency,
            status=status,
            available_at=utcnow() + timedelta(days=settings.partner_hold_days),
        )
    )


def _within_terms(first: datetime | None, *, settings: Settings) -> bool:
    """Commission is recurring for `LEVQOR_PARTNER_COMMISSION_MONTHS` (30-day months)
    from the customer's first payment; 0 means for as long as they pay."""
    if settings.partner_commission_months <= 0 or first is None:
        return True
    return utcnow() - first < timedelta(days=30 * settings.partner_commission_months)


async def reverse_for_refund(session: AsyncSession, *, lost: PaymentLost) -> int:
    """Take back the commission on the money refunded (the payment's refunded total
    going from `lost.before_cents` to `lost.after_cents`): a negative commission beside the
    earned one. Unpaid, it matures with it, so the two net out in the same payout;
    already paid, it is payable at once and the next payout nets it out. The cents
    taken back; several partial refunds of the whole take back exactly all of it."""
    earned = list(
        await session.scalars(
            select(Commission).where(
                Commission.payment_id == lost.payment_id, Commission.amount_cents > 0
            )
        )
    )
    reversed_total = 0
    for commission in earned:
        share = billing.share_of(
            commission.amount_cents, lost.amount_cents, lost.before_cents, lost.after_cents
        )
        if share <= 0 or commission.status == "void":
            continue
        reversed_total += share
        unpaid = commission.status in ("pending", "held") and commission.payout_id is None
        session.add(
            Commission(
                partner_id=commission.partner_id,
                user_id=commission.user_id,
                payment_id=lost.payment_id,
                amount_cents=-share,
                currency=commission.currency,
                # Held with a held commission: the two are decided (and net out) together.
                status="held" if commission.status == "held" else "pending",
                available_at=commission.available_at if unpaid else utcnow(),
            )
        )
    return reversed_total


async def restore_commission(session: AsyncSession, *, regained: PaymentRegained) -> None:
    """A won dispute: the commission it took back is owed again, payable when the
    earned commission is (at once if that hold has passed)."""
    earned = await session.scalar(
        select(Commission)
        .where(Commission.payment_id == regained.payment_id, Commission.amount_cents > 0)
        .limit(1)
    )
    if earned is None or regained.commission_cents <= 0:
        return
    session.add(
        Commission(
            partner_id=earned.partner_id,
            user_id=earned.user_id,
            payment_id=regained.payment_id,
            amount_cents=regained.commission_cents,
            currency=earned.currency,
            available_at=max(earned.available_at, utcnow()),
        )
    )


@dataclass
class Summary:
    partner: Partner
    link: str
    clicks: int
    signups: int
    conversions: int
    commission: dict[str, int]
    payouts: list[Payout] = field(default_factory=list)


async def summary(session: AsyncSession, *, user_id: str, settings: Settings) -> Summary:
    partner = await session.scalar(select(Partner).where(Partner.user_id == user_id))
    if partner is None:
        raise NotPartner("You are not in the partner program; POST /api/v1/partners to join.")
    clicks = await session.scalar(
        select(func.count()).where(ReferralClick.partner_id == partner.id)
    )
    signups = await session.scalar(select(func.count()).where(Referral.partner_id == partner.id))
    conversions = await billing.count_payers(
        session, among=select(Referral.user_id).where(Referral.partner_id == partner.id)
    )
    totals = await commission_totals(session, partner_id=partner.id)
    payouts = list(
        await session.scalars(
            select(Payout).where(Payout.partner_id == partner.id).order_by(Payout.created_at.desc())
        )
    )
    return Summary(
        partner=partner,
        link=link(settings, partner.code),
        clicks=int(clicks or 0),
        signups=int(signups or 0),
        conversions=int(conversions or 0),
        commission=totals,
        payouts=payouts,
    )


async def commission_totals(
    session: AsyncSession, *, partner_id: str | None = None
) -> dict[str, int]:
    """Commission in cents, one partner's or everyone's: pending (in the hold period),
    approved (payable), paid, and held (its referral flagged by the fraud guard, under
    review). Void commissions (a rejected referral) are not counted."""
    totals = {"pending": 0, "approved": 0, "paid": 0, "held": 0}
    state = _commission_state()
    query = select(state, func.sum(Commission.amount_cents)).where(Commission.status != "void")
    if partner_id is not None:
        query = query.where(Commission.partner_id == partner_id)
    rows = await session.execute(query.group_by(state))
    for name, cents in rows:
        totals[name] = int(cents or 0)
    return totals


def _commission_state() -> Any:
    return case(
        (Commission.status == "paid", "paid"),
        (Commission.status == "held", "held"),
        (Commission.payout_id.is_not(None), "approved"),
        (Commission.available_at <= utcnow(), "approved"),
        else_="pending",
    )


async def run_payouts(runtime: Runtime, *, actor: str) -> list[Payout]:
    """Pay every partner whose payable balance reaches the minimum, one Stripe transfer
    each. Payouts a crash left `processing` are sent again first (same idempotency key,
    so Stripe pays once). Only Stripe's definite refusal (a 4xx: no transfer was made)
    fails a payout and gives its commissions back; a 5xx, a timeout or a lost connection
    leaves it `processing`, sent again with the same key on the next run (Stripe answers
    a key it has seen with its first answer, a 500 included, for 24 hours; after that a
    payout is looked up by its transfer group before it is sent again).

    Runs are serialised: a second one at the same moment (the CLI and the admin API,
    two schedulers) waits, then finds nothing owed. A payout is settled only while it
    is still `processing`, so one sent twice is booked once."""
    return await pay_partners(runtime.db, runtime.stripe, runtime.settings, actor=actor)


async def pay_partners(
    db: Database, stripe: StripeGateway, settings: Settings, *, actor: str
) -> list[Payout]:
    """`run_payouts` without a Runtime (the scheduler's tick has none)."""
    async with db.exclusive("levqor_payouts"):
        return await _run_payouts(db, stripe, settings, actor=actor)


async def scheduled_payouts(
    db: Database, stripe: StripeGateway, settings: Settings, *, now: datetime | None = None
) -> list[Payout] | None:
    """The monthly run: on `LEVQOR_PARTNER_PAYOUT_DAY` (UTC), once a month whatever the
    number of schedulers; None when it is not the day or this month's run happened."""
    now = now or utcnow()
    if settings.partner_payout_day == 0 or now.day != settings.partner_payout_day:
        return None
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    async with db.exclusive("levqor_payouts"):
        async with db.session(write=False) as session:
            ran = await session.scalar(
                select(AuditEntry.id)
                .where(
                    AuditEntry.action == PAYOUTS_RUN,
                    AuditEntry.actor == SCHEDULER,
                    AuditEntry.at >= month_start,
                )
                .limit(1)
            )
        if ran is not None:
            return None
        return await _run_payouts(db, stripe, settings, actor=SCHEDULER)


def payouts_tick_task(
    db: Database, stripe: StripeGateway, settings: Settings, *, every_s: float = 3600
) -> TickTask:
    """For the scheduler: `scheduled_payouts` at most every `every_s`."""

    async def run() -> object:
        return await scheduled_payouts(db, stripe, settings)

    return at_most_every(every_s, run)


async def _run_payouts(
    db: Database, stripe: StripeGateway, settings: Settings, *, actor: str
) -> list[Payout]:
    async with db.session(write=True) as session, session.begin():
        await _set_aside(session, settings=settings)
    async with db.session(write=False) as session:
        waiting = list(await session.scalars(select(Payout).where(Payout.status == "processing")))
    done = []
    for payout in waiting:
        transfer_id, failure = None, None
        try:
            if utcnow() - payout.created_at >= KEYS_KEPT:
                transfer_id = await stripe.find_transfer(payout.id)
            transfer_id = transfer_id or await stripe.transfer(
                amount_cents=payout.amount_cents,
                currency=payout.currency,
                destination=payout.destination,
                payout_id=payout.id,
            )
        except StripeUnavailable as exc:
            if not exc.definite:  # Stripe may have moved the money: keep it, retry later
                log.warning("payout_unsure", payout_id=payout.id, error=exc.detail)
                continue
            failure = exc.detail
        except errors.LevqorError as exc:
            failure = exc.detail
        async with db.session(write=True) as session, session.begin():
            settled = await _settle(session, payout.id, transfer_id, failure, actor=actor)
        if settled is not None:
            done.append(settled)
    async with db.session(write=True) as session, session.begin():
        await audit.record(
            session,
            actor=actor,
            action=PAYOUTS_RUN,
            detail={
                "paid": sum(1 for payout in done if payout.status == "paid"),
                "failed": sum(1 for payout in done if payout.status == "failed"),
                "paid_cents": sum(p.amount_cents for p in done if p.status == "paid"),
            },
        )
    return done


async def _set_aside(session: AsyncSession, *, settings: Settings) -> None:
    """A `processing` payout for each partner owed at least the minimum, its commissions
    marked with it, in one transaction. Each payout's amount is the sum of the
    commission rows it actually claimed, never a sum read before claiming them."""
    payable = (
        Commission.status == "pending",
        Commission.payout_id.is_(None),
        Commission.available_at <= utcnow(),
    )
    owed = await session.execute(
        select(Commission.partner_id, Commission.currency)
        .where(*payable)
        .group_by(Commission.partner_id, Commission.currency)
        .having(func.sum(Commission.amount_cents) >= settings.partner_payout_minimum_cents)
    )
    for partner_id, currency in owed.all():
        partner = await session.get(Partner, partner_id)
        if partner is None or partner.payout_account is None or not partner.payouts_enabled:
            continue  # erased, or no account that Stripe lets us pay into yet: it waits
        payout = Payout(
            partner_id=partner_id,
            user_id=partner.user_id,
            amount_cents=0,
            currency=currency,
            destination=partner.payout_account,
        )
        session.add(payout)
        await session.flush()
        claimed = await session.scalars(
            update(Commission)
            .where(*payable, Commission.partner_id == partner_id, Commission.currency == currency)
            .values(payout_id=payout.id)
            .returning(Commission.amount_cents)
        )
        payout.amount_cents = sum(claimed.all())
        if payout.amount_cents < settings.partner_payout_minimum_cents:
            raise errors.Conflict("Another payout run claimed these commissions; run it again.")


async def _settle(
    session: AsyncSession,
    payout_id: str,
    transfer_id: str | None,
    failure: str | None,
    *,
    actor: str,
) -> Payout | None:
    """Book Stripe's answer; None if another run booked this payout already."""
    payout = await session.get(Payout, payout_id, with_for_update=True)
    if payout is None or payout.status != "processing":
        return None
    mine = Commission.payout_id == payout_id
    if transfer_id is not None:
        payout.status, payout.transfer_id = "paid", transfer_id
        await session.execute(update(Commission).where(mine).values(status="paid"))
        action = "payout_sent"
    else:
        payout.status, payout.failure = "failed", (failure or "")[:500]
        await session.execute(update(Commission).where(mine).values(payout_id=None))
        action = "payout_failed"
        log.warning("payout_failed", payout_id=payout_id, failure=failure)
    detail: dict[str, Any] = {
        "payout_id": payout.id,
        "amount_cents": payout.amount_cents,
        "currency": payout.currency,
    }
    if failure:
        detail["failure"] = payout.failure
    await audit.record(session, actor=actor, action=action, object_id=payout.user_id, detail=detail)
    return payout


async def recent_payouts(session: AsyncSession, *, limit: int = 20) -> list[Payout]:
    """The latest payouts to any partner, newest first."""
    query = select(Payout).order_by(Payout.created_at.desc()).limit(limit)
    return list(await session.scalars(query))
