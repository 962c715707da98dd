"""Password resets by e-mail: a signed link that expires and works once.

The link carries a JWT signed with a key derived from LEVQOR_JWT_SECRET for this purpose
alone (an access token can never pass for one), naming the user, its expiry, and a
fingerprint of the password hash it may replace: once the password has changed (this
link used, or any other way), the fingerprint no longer matches and the link is dead.
Nothing is stored. A reset ends every login of the account.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts import sessions
from levqor.accounts.errors import ResetLinkInvalid
from levqor.accounts.kit import AuthKit
from levqor.accounts.models import User
from levqor.accounts.security_log import record_event

PURPOSE = "password_reset"


def issue(kit: AuthKit, user: User, *, now: datetime) -> str:
    ttl = timedelta(seconds=kit.settings.password_reset_ttl_s)
    claims = {
        "sub": user.id,
        "purpose": PURPOSE,
        "pwd": _fingerprint(user.password_hash),
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, _key(kit), algorithm=kit.settings.jwt_algorithm)


async def user_for(session: AsyncSession, *, kit: AuthKit, token: str) -> User:
    """The account a still-valid link is for, or ResetLinkInvalid."""
    try:
        claims = jwt.decode(
            token,
            _key(kit),
            algorithms=[kit.settings.jwt_algorithm],
            options={"require": ["exp", "sub", "purpose", "pwd"]},
        )
    except jwt.PyJWTError as exc:
        raise ResetLinkInvalid() from exc
    user = await session.get(User, str(claims["sub"])) if claims["purpose"] == PURPOSE else None
    fresh = user is not None and hmac.compare_digest(
        str(claims["pwd"]), _fingerprint(user.password_hash)
    )
    if user is None or not user.is_active or not fresh:
        raise ResetLinkInvalid()
    return user


async def reset(session: AsyncSession, *, kit: AuthKit, token: str, new_password: str) -> User:
    """Set a new password through a link: the link dies with the old password, and every
    login of the account ends."""
    user = await user_for(session, kit=kit, token=token)
    user.password_hash = await kit.passwords.hash(new_password)
    await sessions.revoke_all(session, kit=kit, user_id=user.id, reason="password_reset")
    await record_event(session, user_id=user.id, kind="password_reset")
    await session.flush()
    return user


def _key(kit: AuthKit) -> str:
    secret = kit.settings.jwt_secret
    assert secret is not None  # load_settings always fills it
    return hmac.new(
        secret.get_secret_value().encode(), PURPOSE.encode(), hashlib.sha256
    ).hexdigest()


def _fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]
