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

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.compliance.models import EmailSuppression


def normalise(address: str) -> str:
    return address.strip().lower()


def address_hash(key: str, address: str) -> str:
    return hmac.new(key.encode(), normalise(address).encode(), hashlib.sha256).hexdigest()


async def is_suppressed(session: AsyncSession, *, key: str, user_id: str, address: str) -> bool:
    """True when `address` unsubscribed from `user_id`'s mail or may not be mailed at all."""
    found = await session.scalar(
        select(
            exists().where(
                EmailSuppression.address_hash == address_hash(key, address),
                or_(EmailSuppression.user_id == user_id, EmailSuppression.user_id.is_(None)),
            )
        )
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


def unsubscribe_url(public_url: str, key: str, *, user_id: str, address: str) -> str:
    token = unsubscribe_token(key, user_id=user_id, address=address)
    return f"{public_url.rstrip('/')}/unsubscribe?token={token}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
