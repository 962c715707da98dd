"""The suppression list and unsubscribe links (RFC 8058 one-click).

Addresses are looked up by a blind index: HMAC-SHA256 of the normalised address under
`LEVQOR_BLIND_INDEX_KEY`. An unsubscribe token names the sender and the address's index,
signed with the same key, so the link needs no login and cannot be forged or pointed at
another address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import crypto
from levqor.accounts.models import User
from levqor.compliance.models import Consent, EmailSuppression

address_hash = crypto.address_hash


async def is_suppressed(
    session: AsyncSession, *, key: str, user_id: str, address: str, marketing: bool = True
) -> bool:
    """True when `address` may not be sent this mail: nobody may mail it (an erased
    account, a hard bounce), or, for marketing mail, it unsubscribed from `user_id`'s.
    An unsubscribe stops newsletters, not receipts or password resets."""
    senders: ColumnElement[bool] = EmailSuppression.user_id.is_(None)
    if marketing:
        senders = or_(senders, EmailSuppression.user_id == user_id)
    found = await session.scalar(
        select(exists().where(EmailSuppression.address_hash == address_hash(key, address), senders))
    )
    return bool(found)


async def suppress(
    session: AsyncSession, *, key: str, user_id: str | None, address: str, reason: str
) -> None:
    session.add(
        EmailSuppression(user_id=user_id, address_hash=address_hash(key, address), reason=reason)
    )
    await session.flush()


def unsubscribe_token(key: str, *, user_id: str, address: str) -> str:
    claim = f"{user_id}:{address_hash(key, address)}"
    signature = hmac.new(key.encode(), f"unsubscribe:{claim}".encode(), hashlib.sha256).digest()
    return _b64(claim.encode()) + "." + _b64(signature[:18])


@dataclass(frozen=True)
class Unsubscribe:
    user_id: str
    address_hash: str


def read_unsubscribe_token(key: str, token: str) -> Unsubscribe | None:
    """The sender and address a token names, or None when it was not signed by us."""
    try:
        claim_part, signature_part = token.split(".", 1)
        claim = _unb64(claim_part).decode()
        signature = _unb64(signature_part)
    except (ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(key.encode(), f"unsubscribe:{claim}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected[:18]):
        return None
    user_id, _, hashed = claim.partition(":")
    return Unsubscribe(user_id, hashed) if user_id and len(hashed) == 64 else None


async def unsubscribe(session: AsyncSession, request: Unsubscribe) -> None:
    """Suppress the address for that sender at once; asking twice changes nothing."""
    if await session.get(User, request.user_id) is None:
        return  # the sender's account is gone: nothing of theirs can mail anyone
    already = await session.scalar(
        select(
            exists().where(
                EmailSuppression.address_hash == request.address_hash,
                EmailSuppression.user_id == request.user_id,
            )
        )
    )
    if not already:
        session.add(
            EmailSuppression(
                user_id=request.user_id, address_hash=request.address_hash, reason="unsubscribed"
            )
        )
        await session.flush()


def unsubscribe_url(public_url: str, key: str, *, user_id: str, address: str) -> str:
    token = unsubscribe_token(key, user_id=user_id, address=address)
    return f"{public_url.rstrip('/')}/unsubscribe?token={token}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def record_consent(
    session: AsyncSession, *, user_id: str, kind: str, granted: bool, source: str
) -> None:
    session.add(Consent(user_id=user_id, kind=kind, granted=granted, source=source))
    await session.flush()


async def current_consent(session: AsyncSession, *, user_id: str, kind: str) -> bool:
    latest = await session.scalar(
        select(Consent.granted)
        .where(Consent.user_id == user_id, Consent.kind == kind)
        .order_by(Consent.id.desc())
        .limit(1)
    )
    return bool(latest)
