"""Logins as refresh-token families: issue, rotate, detect reuse, revoke; and checking
access tokens against those revocations. Plain async functions; they flush, never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Row, RowMapping, String, bindparam, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from levqor.accounts.errors import InvalidToken, TokenReused
from levqor.accounts.kit import AuthKit, Principal, TokenCaller, TokenPair
from levqor.accounts.models import (
    API_KEY_SCOPES,
    LoginFailure,
    RefreshToken,
    RevokedAccessToken,
    TokenFamily,
    User,
)
from levqor.accounts.security_log import record_event
from levqor.accounts.tokens import AccessClaims, new_refresh_token, sha256_hex
from levqor.db.base import rowcount, utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger

log = get_logger("levqor.accounts")


async def start_session(session: AsyncSession, *, kit: AuthKit, user: User) -> TokenPair:
    now = utcnow()
    family = TokenFamily(user_id=user.id, expires_at=now + _refresh_ttl(kit))
    session.add(family)
    await session.flush()
    return await _issue_pair(session, kit=kit, user_id=user.id, family=family, now=now)


async def _issue_pair(
    session: AsyncSession, *, kit: AuthKit, user_id: str, family: TokenFamily, now: datetime
) -> TokenPair:
    raw = new_refresh_token()
    expires_at = now + _refresh_ttl(kit)
    session.add(
        RefreshToken(family_id=family.id, token_hash=sha256_hex(raw), expires_at=expires_at)
    )
    family.expires_at = expires_at
    access, _claims = kit.access_tokens.issue(user_id=user_id, session_id=family.id, now=now)
    await session.flush()
    return TokenPair(access, raw, kit.settings.access_token_ttl_s)


def _refresh_ttl(kit: AuthKit) -> timedelta:
    return timedelta(seconds=kit.settings.refresh_token_ttl_s)


async def refresh(session: AsyncSession, *, kit: AuthKit, refresh_token: str) -> TokenPair:
    """Spend a refresh token for a new pair.

    A token spent a second time is theft or a bug either way: unless it comes within the
    grace window (two tabs refreshing at once), the whole family is revoked.
    """
    now = utcnow()
    row = (
        await session.execute(
            select(RefreshToken, TokenFamily, User)
            .join(TokenFamily, RefreshToken.family_id == TokenFamily.id)
            .join(User, TokenFamily.user_id == User.id)
            .where(RefreshToken.token_hash == sha256_hex(refresh_token))
        )
    ).first()
    if row is None:
        raise InvalidToken("Unknown refresh token.")
    token, family, user = row
    if family.revoked_at is not None or not user.is_active:
        raise InvalidToken("This login has been revoked.")
    if token.expires_at <= now:
        raise InvalidToken("The refresh token has expired.")

    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(claimed) == 0:
        used_at = await session.scalar(
            select(RefreshToken.used_at).where(RefreshToken.id == token.id)
        )
        grace = timedelta(seconds=kit.settings.refresh_reuse_grace_s)
        if used_at is None or now - used_at > grace:
            await revoke_family(session, kit=kit, family=family, reason="reuse", now=now)
            await record_event(
                session, user_id=user.id, kind="refresh_token_reuse", detail={"sid": family.id}
            )
            log.warning("refresh_token_reuse", user_id=user.id, sid=family.id)
            raise TokenReused()
    return await _issue_pair(session, kit=kit, user_id=user.id, family=family, now=now)


async def revoke_family(
    session: AsyncSession, *, kit: AuthKit, family: TokenFamily, reason: str, now: datetime
) -> None:
    family.revoked_at = now
    family.revoked_reason = reason
    kit.revoked.add(family.id)
    await session.flush()


async def revoke_all(session: AsyncSession, *, kit: AuthKit, user_id: str, reason: str) -> int:
    """End every login of `user_id` (a password reset); how many there were."""
    now = utcnow()
    families = list(
        await session.scalars(
            select(TokenFamily).where(
                TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None)
            )
        )
    )
    for family in families:
        await revoke_family(session, kit=kit, family=family, reason=reason, now=now)
    return len(families)


async def logout(
    session: AsyncSession, *, kit: AuthKit, refresh_token: str, principal: Principal | None
) -> None:
    """Revoke the login the refresh token belongs to, and the calling access token."""
    now = utcnow()
    family = await session.scalar(
        select(TokenFamily)
        .join(RefreshToken, RefreshToken.family_id == TokenFamily.id)
        .where(RefreshToken.token_hash == sha256_hex(refresh_token))
    )
    if family is not None and family.revoked_at is None:
        await revoke_family(session, kit=kit, family=family, reason="logout", now=now)
    if principal is not None and principal.jti and principal.token_expires_at:
        await revoke_access_token(
            session,
            kit=kit,
            jti=principal.jti,
            user_id=principal.user.id,
            expires_at=principal.token_expires_at,
        )
    owner = family.user_id if family is not None else principal.user.id if principal else None
    if owner is not None:
        await record_event(session, user_id=owner, kind="logout")


async def revoke_access_token(
    session: AsyncSession, *, kit: AuthKit, jti: str, user_id: str, expires_at: datetime
) -> None:
    if await session.get(RevokedAccessToken, jti) is None:
        session.add(RevokedAccessToken(jti=jti, user_id=user_id, expires_at=expires_at))
        await session.flush()
    kit.revoked.add(jti)


# Built once: constructing and cache-keying it per request was a visible share of a GET.
_REVOCATIONS = (
    exists().where(RevokedAccessToken.jti == bindparam("jti")).label("token_revoked"),
    exists()
    .where(TokenFamily.id == bindparam("sid"), TokenFamily.revoked_at.is_not(None))
    .label("login_revoked"),
)
USER_WITH_REVOCATIONS = select(User, *_REVOCATIONS).where(User.id == bindparam("sub"))
# The same query as plain columns, for a bare connection.
USER_ROW_WITH_REVOCATIONS = select(*_REVOCATIONS, *User.__table__.columns).where(
    User.id == bindparam("sub")
)
# The same for many tokens at once, on PostgreSQL: row `n` is the nth (sub, jti, sid).
_CLAIMS = (
    func.unnest(
        bindparam("subs", type_=ARRAY(String)),
        bindparam("jtis", type_=ARRAY(String)),
        bindparam("sids", type_=ARRAY(String)),
    )
    .table_valued("sub", "jti", "sid", with_ordinality="n")
    .render_derived(name="claims")
)
USERS_OF_CLAIMS = select(
    exists().where(RevokedAccessToken.jti == _CLAIMS.c.jti).label("token_revoked"),
    exists()
    .where(TokenFamily.id == _CLAIMS.c.sid, TokenFamily.revoked_at.is_not(None))
    .label("login_revoked"),
    *User.__table__.columns,
    _CLAIMS.c.n,
).select_from(_CLAIMS.join(User.__table__, User.__table__.c.id == _CLAIMS.c.sub))


@cache
def _user_attributes() -> tuple[tuple[str, str], ...]:
    """(column, attribute) of every mapped column of `users`. Asked on first use, not at
    import: reading a mapper's attributes configures every mapper (30 to 40 ms), which
    a worker, which never loads users this way, would pay at each start."""
    return tuple(
        (column.key, attribute.key)
        for attribute in User.__mapper__.column_attrs
        for column in attribute.columns
    )


async def authenticate_access_token(
    session: AsyncSession, *, kit: AuthKit, token: str
) -> Principal:
    """Verify the JWT, then load the user into `session` (for a request that may change
    them) and check revocation, in one query."""
    claims = _unrevoked_claims(kit, token)
    row = (await session.execute(USER_WITH_REVOCATIONS, _params(claims))).first()
    if row is None:
        raise InvalidToken()
    user, is_jti_revoked, is_sid_revoked = row
    _refuse_revoked(kit, claims, user.is_active, is_jti_revoked, is_sid_revoked)
    return Principal(
        user=user,
        via="jwt",
        scopes=frozenset(API_KEY_SCOPES),
        jti=claims.jti,
        session_id=claims.sid,
        token_expires_at=claims.expires_at,
    )


async def authenticate_reader(db: Database, *, kit: AuthKit, token: str) -> Principal:
    """Verify the JWT, then load the caller of a read request on a bare read connection,
    with the revocation check, together with the callers of the read requests that wait
    with it (`kit.token_callers`). The user comes back detached, their own: a session's
    bookkeeping cost more than the query."""
    claims = _unrevoked_claims(kit, token)
    found = await kit.token_callers.read(
        (claims.sub, claims.jti, claims.sid), lambda keys: _load_token_callers(db, keys)
    )
    if found is None:
        raise InvalidToken()
    _refuse_revoked(
        kit, claims, found.user_values["is_active"], found.token_revoked, found.login_revoked
    )
    return Principal(
        user=detached_user(found.user_values),
        via="jwt",
        scopes=frozenset(API_KEY_SCOPES),
        jti=claims.jti,
        session_id=claims.sid,
        token_expires_at=claims.expires_at,
    )


async def _load_token_callers(
    db: Database, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], TokenCaller]:
    """(sub, jti, sid) -> the caller, for those whose user exists."""
    found: dict[tuple[str, str, str], TokenCaller] = {}
    async with db.reading() as connection:
        if db.is_sqlite:  # no arrays; a statement on SQLite is a call into the library
            for sub, jti, sid in keys:
                one = {"sub": sub, "jti": jti, "sid": sid}
                if row := (await connection.execute(USER_ROW_WITH_REVOCATIONS, one)).first():
                    found[sub, jti, sid] = _token_caller(row)
        else:
            many = {
                "subs": [sub for sub, _, _ in keys],
                "jtis": [jti for _, jti, _ in keys],
                "sids": [sid for _, _, sid in keys],
            }
            for row in await connection.execute(USERS_OF_CLAIMS, many):
                found[keys[row.n - 1]] = _token_caller(row)
    return found


def _token_caller(row: Row[Any]) -> TokenCaller:
    columns = row._mapping
    return TokenCaller(
        user_values(columns), bool(columns["token_revoked"]), bool(columns["login_revoked"])
    )


def _unrevoked_claims(kit: AuthKit, token: str) -> AccessClaims:
    claims = kit.access_tokens.decode(token)
    if claims.jti in kit.revoked or claims.sid in kit.revoked:
        raise InvalidToken("The token has been revoked.")
    return claims


def _params(claims: AccessClaims) -> dict[str, str]:
    return {"sub": claims.sub, "jti": claims.jti, "sid": claims.sid}


def _refuse_revoked(
    kit: AuthKit, claims: AccessClaims, is_active: bool, is_jti_revoked: bool, is_sid_revoked: bool
) -> None:
    if not is_active:
        raise InvalidToken()
    if is_jti_revoked or is_sid_revoked:
        kit.revoked.add(claims.jti if is_jti_revoked else claims.sid)
        raise InvalidToken("The token has been revoked.")


def user_values(columns: RowMapping) -> dict[str, Any]:
    """A row of `users`' columns as the User's attribute values."""
    return {attribute: columns[column] for column, attribute in _user_attributes()}


def detached_user(values: dict[str, Any]) -> User:
    """The user of `user_values`, as if loaded and then detached: a session given it
    would update their row, never insert one."""
    user = User(**values)
    make_transient_to_detached(user)
    return user


@dataclass(frozen=True)
class PruneReport:
    refresh_tokens: int
    token_families: int
    revoked_access_tokens: int
    login_failures: int


async def prune_expired(session: AsyncSession, *, kit: AuthKit) -> PruneReport:
    """Delete what can no longer matter: expired tokens, old revocations and failures."""
    now = utcnow()
    window = timedelta(seconds=kit.settings.login_lockout_window_s)
    counts = []
    for statement in (
        delete(RefreshToken).where(RefreshToken.expires_at <= now),
        delete(TokenFamily).where(TokenFamily.expires_at <= now),
        delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= now - _leeway(kit)),
        delete(LoginFailure).where(LoginFailure.failed_at <= now - window),
    ):
        result = await session.execute(statement)
        counts.append(rowcount(result))
    return PruneReport(*counts)


def _leeway(kit: AuthKit) -> timedelta:
    return timedelta(seconds=kit.settings.jwt_leeway_s)
