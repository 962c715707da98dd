"""Accounts logic: plain async functions over an AsyncSession. They flush, never commit."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, delete, exists, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    LoginLocked,
    TokenReused,
)
from levqor.accounts.models import (
    API_KEY_SCOPES,
    ROLE_ADMIN,
    ROLE_USER,
    ApiKey,
    LoginFailure,
    RefreshToken,
    RevokedAccessToken,
    SecurityEvent,
    TokenFamily,
    User,
)
from levqor.accounts.passwords import Passwords
from levqor.accounts.tokens import (
    API_KEY_PREFIX,
    AccessTokens,
    keyed_hash,
    new_api_key,
    new_refresh_token,
    sha256_hex,
)
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.logging import get_logger

log = get_logger("levqor.accounts")

API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)


class RevokedIds:
    """Ids known to be revoked (access `jti`s and login `sid`s), remembered in-process.

    Revocation is permanent, so a remembered id can never be stale: a replayed revoked
    token is refused without a database round trip. Unknown ids are always checked in the
    database, in the same query that loads the user.
    """

    def __init__(self, max_size: int = 50_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._max_size = max_size

    def add(self, *ids: str) -> None:
        for value in ids:
            self._ids[value] = None
        while len(self._ids) > self._max_size:
            self._ids.popitem(last=False)

    def __contains__(self, value: object) -> bool:
        return value in self._ids


@dataclass
class AuthKit:
    """What the accounts service needs besides a session; built once per process."""

    settings: Settings
    passwords: Passwords
    access_tokens: AccessTokens
    revoked: RevokedIds = field(default_factory=RevokedIds)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthKit:
        return cls(settings, Passwords(settings), AccessTokens(settings))

    @property
    def account_key_secret(self) -> str:
        assert self.settings.jwt_secret is not None
        return "login-failures:" + self.settings.jwt_secret.get_secret_value()


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, how they proved it, and what they may do."""

    user: User
    via: Literal["jwt", "api_key"]
    scopes: frozenset[str]
    jti: str | None = None
    session_id: str | None = None
    token_expires_at: datetime | None = None
    api_key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.role == ROLE_ADMIN


# --- e-mail ---------------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """Validate syntax (no DNS) and fold case, so one address has one account."""
    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise errors.InvalidRequest(str(exc), field="email") from exc
    return result.normalized.lower()


async def get_by_email(session: AsyncSession, *, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == normalise_email(email)))
    return result.scalar_one_or_none()


# --- signup and login -----------------------------------------------------------------


async def create(
    session: AsyncSession,
    *,
    kit: AuthKit,
    email: str,
    password: str,
    name: str | None = None,
    role: str = ROLE_USER,
) -> User:
    address = normalise_email(email)
    taken = await session.scalar(select(exists().where(User.email == address)))
    if taken:
        raise EmailTaken()
    user = User(
        email=address,
        name=name,
        password_hash=await kit.passwords.hash(password),
        role=role,
        credits=kit.settings.free_credits,
    )
    session.add(user)
    await session.flush()
    return user


async def signup(
    session: AsyncSession, *, kit: AuthKit, email: str, password: str, name: str | None
) -> tuple[User, TokenPair]:
    user = await create(session, kit=kit, email=email, password=password, name=name)
    await record_event(session, user_id=user.id, kind="signup")
    return user, await start_session(session, kit=kit, user=user)


async def login(
    session: AsyncSession, *, kit: AuthKit, email: str, password: str
) -> tuple[User, TokenPair]:
    """Check a password. Unknown e-mail and wrong password look and take the same."""
    try:
        address = normalise_email(email)
    except errors.InvalidRequest:
        address = email.strip().lower()
    account_key = keyed_hash(kit.account_key_secret, address)
    await _lock_account_key(session, account_key)
    await _refuse_if_locked(session, kit=kit, account_key=account_key)

    user = await session.scalar(select(User).where(User.email == address))
    valid = await kit.passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        session.add(LoginFailure(account_key=account_key))
        await record_event(session, user_id=user.id if user else None, kind="login_failed")
        raise InvalidCredentials()

    await session.execute(delete(LoginFailure).where(LoginFailure.account_key == account_key))
    if kit.passwords.needs_rehash(user.password_hash):
        user.password_hash = await kit.passwords.hash(password)
    await record_event(session, user_id=user.id, kind="login")
    return user, await start_session(session, kit=kit, user=user)


async def _lock_account_key(session: AsyncSession, account_key: str) -> None:
    """Serialise logins for one account so parallel guesses cannot slip past the lockout.

    SQLite write transactions are already serial (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock on the account key.
    """
    if session.get_bind().dialect.name == "postgresql":
        lock_id = int(account_key[:15], 16)
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


async def _refuse_if_locked(session: AsyncSession, *, kit: AuthKit, account_key: str) -> None:
    window = timedelta(seconds=kit.settings.login_lockout_window_s)
    limit = kit.settings.login_max_failures
    now = utcnow()
    recent = (
        await session.scalars(
            select(LoginFailure.failed_at)
            .where(LoginFailure.account_key == account_key, LoginFailure.failed_at > now - window)
            .order_by(LoginFailure.failed_at.desc())
            .limit(limit)
        )
    ).all()
    if len(recent) >= limit:
        unlocks_at = recent[-1] + window
        retry_after = max(1, int((unlocks_at - now).total_seconds()) + 1)
        raise LoginLocked(headers={"Retry-After": str(retry_after)})


# --- sessions (refresh-token families) ------------------------------------------------


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
    if claimed.rowcount == 0:  # type: ignore[attr-defined]
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
    if family is not None or principal is not None:
        user_id = family.user_id if family is not None else principal.user.id  # type: ignore[union-attr]
        await record_event(session, user_id=user_id, kind="logout")


async def revoke_access_token(
    session: AsyncSession, *, kit: AuthKit, jti: str, user_id: str, expires_at: datetime
) -> None:
    if await session.get(RevokedAccessToken, jti) is None:
        session.add(RevokedAccessToken(jti=jti, user_id=user_id, expires_at=expires_at))
        await session.flush()
    kit.revoked.add(jti)


# --- authenticating requests ----------------------------------------------------------


async def authenticate(session: AsyncSession, *, kit: AuthKit, credential: str) -> Principal:
    if credential.startswith(API_KEY_PREFIX):
        return await authenticate_api_key(session, api_key=credential)
    return await authenticate_access_token(session, kit=kit, token=credential)


# Built once: constructing and cache-keying it per request was a visible share of a GET.
USER_WITH_REVOCATIONS = select(
    User,
    exists().where(RevokedAccessToken.jti == bindparam("jti")),
    exists().where(TokenFamily.id == bindparam("sid"), TokenFamily.revoked_at.is_not(None)),
).where(User.id == bindparam("sub"))


async def authenticate_access_token(
    session: AsyncSession, *, kit: AuthKit, token: str
) -> Principal:
    """Verify the JWT, then load the user and check revocation in one query."""
    claims = kit.access_tokens.decode(token)
    if claims.jti in kit.revoked or claims.sid in kit.revoked:
        raise InvalidToken("The token has been revoked.")
    row = (
        await session.execute(
            USER_WITH_REVOCATIONS, {"sub": claims.sub, "jti": claims.jti, "sid": claims.sid}
        )
    ).first()
    if row is None or not row[0].is_active:
        raise InvalidToken()
    user, is_jti_revoked, is_sid_revoked = row
    if is_jti_revoked or is_sid_revoked:
        kit.revoked.add(claims.jti if is_jti_revoked else claims.sid)
        raise InvalidToken("The token has been revoked.")
    return Principal(
        user=user,
        via="jwt",
        scopes=frozenset(API_KEY_SCOPES),
        jti=claims.jti,
        session_id=claims.sid,
        token_expires_at=claims.expires_at,
    )


async def authenticate_api_key(session: AsyncSession, *, api_key: str) -> Principal:
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == sha256_hex(api_key))
        )
    ).first()
    if row is None or not row[1].is_active:
        raise InvalidToken("Unknown API key.")
    key, user = row
    await _touch_api_key(session, key)
    return Principal(user=user, via="api_key", scopes=frozenset(key.scopes), api_key_id=key.id)


async def _touch_api_key(session: AsyncSession, key: ApiKey) -> None:
    """Record use at most once a minute; a lost update here must never fail a request.

    On a GET (an autocommit session) the UPDATE is its own short transaction; on SQLite it
    may time out waiting for the write lock, which only loses this timestamp.
    """
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < API_KEY_TOUCH_INTERVAL:
        return
    try:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.id)
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    except OperationalError as exc:
        log.info("api_key_touch_skipped", key_id=key.id, error=str(exc.orig))


# --- API keys -------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession, *, user: User, name: str, scopes: list[str]
) -> tuple[ApiKey, str]:
    raw = new_api_key()
    key = ApiKey(
        user_id=user.id,
        name=name,
        prefix=raw[: len(API_KEY_PREFIX) + 6],
        key_hash=sha256_hex(raw),
        scopes=sorted(set(scopes)),
    )
    session.add(key)
    await session.flush()
    await record_event(session, user_id=user.id, kind="api_key_created", detail={"key_id": key.id})
    return key, raw


async def list_api_keys(session: AsyncSession, *, user: User) -> list[ApiKey]:
    result = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc())
    )
    return list(result)


async def delete_api_key(session: AsyncSession, *, user: User, key_id: str) -> None:
    result = await session.execute(
        delete(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise errors.NotFound("No such API key.")
    await record_event(session, user_id=user.id, kind="api_key_deleted", detail={"key_id": key_id})


# --- admin and upkeep -----------------------------------------------------------------


async def has_admin(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().where(User.role == ROLE_ADMIN))))


async def record_event(
    session: AsyncSession, *, user_id: str | None, kind: str, detail: dict[str, str] | None = None
) -> None:
    session.add(SecurityEvent(user_id=user_id, kind=kind, detail=detail or {}))
    await session.flush()


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
        counts.append(result.rowcount)  # type: ignore[attr-defined]
    return PruneReport(*counts)


def _leeway(kit: AuthKit) -> timedelta:
    return timedelta(seconds=kit.settings.jwt_leeway_s)


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)
