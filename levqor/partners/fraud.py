"""The fraud guard: each referred signup scored on several signals.

A partner earns a share of what the people they refer pay, so a partner has a reason to
refer themselves, or to make throwaway accounts. Each signal found adds its weight to the
referral's score; at `LEVQOR_PARTNER_FRAUD_THRESHOLD` or above the referral is flagged
and its commissions are held (not paid) until an admin approves it (payable again) or
rejects it (void). Every decision is in the audit log with its signals
(`levqor partners fraud-log`). IPs and devices are compared as keyed hashes only.

| signal | weight | what it sees |
| --- | ---: | --- |
| `same_email` | 100 | the partner's address, normalised (case; Gmail dots, `+tags`) |
| `partner_device` | 100 | the browser presented a device cookie the partner's own login set |
| `partner_ip` | 60 | the signup came from an IP the partner's own sessions used (90 days) |
| `disposable_email` | 50 | a throwaway domain (the `disposable-email-domains` list) |
| `ip_burst` | 50 | 3 or more referred signups from that IP within a day |
| `fast_click` | 30 | under 5 s from the click on the link to the account |
| `fast_purchase` | 30 | under 60 s from the account to its first payment |

One weak signal alone (a fast signup) is not enough; one strong one is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from disposable_email_domains import blocklist
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts.events import UserSignedUp
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.audit.models import AuditEntry
from levqor.billing import service as billing
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.logging import get_logger
from levqor.partners.models import Commission, Partner, Referral, ReferralClick

log = get_logger("levqor.partners.fraud")

GMAIL = frozenset({"gmail.com", "googlemail.com"})
SESSION_LOOK_BACK = timedelta(days=90)
BURST_WINDOW = timedelta(days=1)
BURST_SIGNUPS = 3
FAST_CLICK = timedelta(seconds=5)
FAST_PURCHASE = timedelta(seconds=60)
OK, FLAGGED, APPROVED, REJECTED = "ok", "flagged", "approved", "rejected"


@dataclass(frozen=True)
class Signal:
    name: str
    weight: int
    detail: str


def normalised(address: str) -> str:
    """An address as a mailbox receives it: lowercase, without a `+tag`; for Gmail also
    without dots, and googlemail.com read as gmail.com."""
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in GMAIL:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def disposable(address: str) -> bool:
    domain = address.strip().lower().rpartition("@")[2]
    parts = domain.split(".")
    # A subdomain of a throwaway domain is one too (x.mailinator.com).
    return any(".".join(parts[i:]) in blocklist for i in range(len(parts) - 1))


async def signup_signals(
    session: AsyncSession, *, partner: Partner, signed_up: UserSignedUp
) -> list[Signal]:
    """What a referred signup shows, before anything is stored about it."""
    found = []
    owner = await session.get(User, partner.user_id)
    if owner is not None and normalised(owner.email) == normalised(signed_up.email):
        found.append(Signal("same_email", 100, "the partner's own address"))
    if disposable(signed_up.email):
        domain = signed_up.email.rpartition("@")[2].lower()
        found.append(Signal("disposable_email", 50, domain))
    seen = await _partner_sightings(session, partner.user_id)
    if signed_up.device_hash and signed_up.device_hash in seen.devices:
        found.append(Signal("partner_device", 100, "a browser the partner logged in from"))
    if signed_up.ip_hash and signed_up.ip_hash in seen.ips:
        found.append(Signal("partner_ip", 60, "an IP the partner's own sessions used"))
    if signed_up.ip_hash:
        burst = await session.scalar(
            select(func.count()).where(
                Referral.ip_hash == signed_up.ip_hash, Referral.at >= utcnow() - BURST_WINDOW
            )
        )
        if int(burst or 0) + 1 >= BURST_SIGNUPS:
            found.append(
                Signal("ip_burst", 50, f"{int(burst or 0) + 1} signups from one IP in a day")
            )
        clicked = await session.scalar(
            select(func.max(ReferralClick.at)).where(
                ReferralClick.partner_id == partner.id,
                ReferralClick.visitor_hash == signed_up.ip_hash,
            )
        )
        if clicked is not None and utcnow() - clicked < FAST_CLICK:
            took = (utcnow() - clicked).total_seconds()
            found.append(Signal("fast_click", 30, f"{took:.1f} s from the click to the account"))
    return found


@dataclass(frozen=True)
class _Sightings:
    ips: set[str]
    devices: set[str]


async def _partner_sightings(session: AsyncSession, user_id: str) -> _Sightings:
    """The hashed IPs and devices the partner's own requests came from (the audit log
    keeps a keyed hash of the IP of each, and a login's device fingerprint)."""
    rows = await session.execute(
        select(AuditEntry.ip_hash, AuditEntry.action, AuditEntry.detail)
        .where(AuditEntry.actor == user_id, AuditEntry.at >= utcnow() - SESSION_LOOK_BACK)
        .order_by(AuditEntry.id.desc())
        .limit(500)
    )
    ips, devices = set(), set()
    for ip_hash, action, detail in rows:
        if ip_hash:
            ips.add(ip_hash)
        if action == "login" and isinstance(detail, dict) and detail.get("device"):
            devices.add(str(detail["device"]))
    return _Sightings(ips, devices)


def purchase_signal(referral: Referral, paid_at: datetime) -> Signal | None:
    """A first payment implausibly soon after the signup."""
    if any(signal["name"] == "fast_purchase" for signal in referral.signals):
        return None
    took = paid_at - referral.at
    if took < FAST_PURCHASE:
        return Signal(
            "fast_purchase", 30, f"{took.total_seconds():.0f} s from the account to paying"
        )
    return None


async def judge(
    session: AsyncSession, referral: Referral, signals: list[Signal], *, settings: Settings
) -> None:
    """Add signals to a referral's score; at the threshold, flag it (audited) and hold
    its commissions. A referral an admin decided stays decided."""
    if not signals:
        return
    referral.signals = [*referral.signals, *(asdict(signal) for signal in signals)]
    referral.score = sum(int(signal["weight"]) for signal in referral.signals)
    threshold = settings.partner_fraud_threshold
    if referral.status != OK or threshold <= 0 or referral.score < threshold:
        return
    referral.status = FLAGGED
    await session.execute(
        update(Commission)
        .where(_unpaid_of(referral), Commission.status == "pending")
        .values(status="held")
    )
    log.warning("referral_flagged", user_id=referral.user_id, score=referral.score)
    await audit.record(
        session,
        actor="system",
        action="referral_flagged",
        object_id=referral.user_id,
        detail=_decision_detail(referral),
    )


async def decide(session: AsyncSession, *, user_id: str, approve: bool, admin_id: str) -> Referral:
    """An admin's verdict on a flagged referral: approved, its held commissions become
    payable; rejected, they are void (and later payments earn nothing)."""
    referral = await session.get(Referral, user_id, with_for_update=True)
    if referral is None:
        raise errors.NotFound(f"No referral of user {user_id}.")
    if referral.status != FLAGGED:
        raise NotFlagged(f"This referral is {referral.status}, not flagged.")
    referral.status = APPROVED if approve else REJECTED
    referral.decided_by, referral.decided_at = admin_id, utcnow()
    await session.execute(
        update(Commission)
        .where(_unpaid_of(referral), Commission.status == "held")
        .values(status="pending" if approve else "void")
    )
    await audit.record(
        session,
        actor=admin_id,
        action="referral_approved" if approve else "referral_rejected",
        object_id=referral.user_id,
        detail=_decision_detail(referral),
    )
    return referral


class NotFlagged(errors.Conflict):
    code = "not_flagged"


def commission_status(referral: Referral | None) -> str:
    """What a new commission on a referred payment starts as."""
    if referral is None or referral.status in (OK, APPROVED):
        return "pending"
    return "held" if referral.status == FLAGGED else "void"


async def referrals(
    session: AsyncSession, *, status: str | None, limit: int = 100
) -> list[Referral]:
    query = select(Referral).order_by(Referral.at.desc()).limit(limit)
    if status is not None:
        query = query.where(Referral.status == status)
    return list(await session.scalars(query))


DECISIONS = ("referral_flagged", "referral_approved", "referral_rejected")


async def decisions(session: AsyncSession, *, limit: int = 500) -> list[AuditEntry]:
    """Every fraud-guard decision, newest first, from the audit log."""
    rows = await session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action.in_(DECISIONS))
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return list(rows)


def _unpaid_of(referral: Referral) -> Any:
    """The unpaid commissions earned on the referred user's payments."""
    return Commission.payment_id.in_(
        billing.payment_ids_of(referral.user_id)
    ) & Commission.payout_id.is_(None)


def _decision_detail(referral: Referral) -> dict[str, Any]:
    return {
        "partner_id": referral.partner_id,
        "score": referral.score,
        "signals": referral.signals,
        "status": referral.status,
    }
