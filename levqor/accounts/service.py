"""Accounts logic: users, passwords, login, API keys. Plain async functions over an
AsyncSession; they flush, never commit. Logins as token families live in `sessions`.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, exists, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor import crypto, errors, events
from levqor.accounts import sessions
from levqor.accounts.errors import EmailTaken, InvalidCredentials, InvalidToken, LoginLocked
from levqor.accounts.events import UserCreated, UserSignedUp
from levqor.accounts.kit import AuthKit, KeyCaller, Principal, TokenPair
from levqor.accounts.models import ROLE_ADMIN, ROLE_USER, ApiKey, LoginFailure, User
from levqor.accounts.security_log import record_event
from levqor.accounts.tokens import API_KEY_PREFIX, keyed_hash, new_api_key, sha256_hex
from levqor.audit import service as audit
from levqor.db import pages
from levqor.db.base import rowcount, utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger

log = get_logger("levqor.accounts")

API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)
# Set by a partner's referral link (partners), read at signup and passed on in `UserSignedUp`.
REFERRAL_COOKIE = "levqor_ref"


# --- e-mail ---------------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """Validate syntax (no DNS) and fold case, so one address has one account."""
    # Loaded here, not with the module: its Unicode tables take 35 ms to compile, and a
    # worker, which never reads an address, imports this module (see `entry`).
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise errors.InvalidRequest(str(exc), field="email") from exc
    return result.normalized.lower()


def email_index(kit: AuthKit, address: str) -> str:
    """The blind index of an address: how accounts are found and kept unique while the
    address itself is stored encrypted."""
    key = kit.settings.blind_index_key
    assert key is not None  # load_settings always fills it
    return crypto.address_hash(key.get_secret_value(), address)


async def find_by_email(session: AsyncSession, *, kit: AuthKit, email: str) -> User | None:
    try:
        address = normalise_email(email)
    except errors.InvalidRequest:
        return None
    found: User | None = await session.scalar(
        select(User).where(User.email_index == email_index(kit, address))
    )
    return found


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
    """A new user; `UserCreated` is published, so billing grants the opening credits."""
    address = normalise_email(email)
    index = email_index(kit, address)
    taken = await session.scalar(select(exists().where(User.email_index == index)))
    if taken:
        raise EmailTaken()
    user = User(
        email=address,
        email_index=index,
        name=name,
        password_hash=await kit.passwords.hash(password),
        role=role,
    )
    session.add(user)
    await session.flush()
    await events.publish(session, UserCreated(user.id))
    return user


async def signup(
    session: AsyncSession,
    *,
    kit: AuthKit,
    email: str,
    password: str,
    name: str | None,
    marketing_consent: bool = False,
    referral_code: str | None = None,
    device: str | None = None,
) -> tuple[User, TokenPair]:
    """A person's own signup: the user, their first session, and `UserSignedUp` for the
    referral (partners) and the consent they gave (compliance). `device` is the device
    cookie the browser presented (one a login set), for the partners' fraud guard."""
    user = await create(session, kit=kit, email=email, password=password, name=name)
    await record_event(session, user_id=user.id, kind="signup")
    signed_up = UserSignedUp(
        user.id,
        referral_code,
        marketing_consent,
        email=email,
        ip_hash=audit.client_hash(),
        device_hash=device_fingerprint(kit, device),
    )
    await events.publish(session, signed_up)
    return user, await sessions.start_session(session, kit=kit, user=user)


def device_fingerprint(kit: AuthKit, token: str | None) -> str | None:
    """A keyed hash of a device cookie's id (not its signature, which names the account):
    the same browser gives the same fingerprint at a login and at a later signup."""
    device = (token or "").partition(".")[0]
    return keyed_hash(kit.account_key_secret, f"device-id:{device}") if device else None


def _account_key(kit: AuthKit, address: str) -> str:
    """What login failures are counted by: a keyed hash, never the address."""
    return keyed_hash(kit.account_key_secret, address)


async def delete_account(session: AsyncSession, *, kit: AuthKit, user: User) -> None:
    """Delete the user row (tokens, keys and everything owned cascade with it) and the
    login failures counted against the address."""
    await session.execute(
        delete(LoginFailure).where(LoginFailure.account_key == _account_key(kit, user.email))
    )
    await session.execute(delete(User).where(User.id == user.id))


@dataclass(frozen=True)
class LoginSource:
    """Where a login attempt comes from: the client's IP, and the device cookie a
    browser got from an earlier successful login (None when it has none)."""

    ip: str
    device: str | None = None


async def login(
    session: AsyncSession,
    *,
    kit: AuthKit,
    email: str,
    password: str,
    source: LoginSource = LoginSource("unknown"),
) -> tuple[User, TokenPair, str]:
    """Check a password; the user, their tokens and a device token for the browser.
    Unknown e-mail and wrong password look and take the same.

    Failures slow down their source, not the account (OWASP): past
    `login_max_failures` from one IP or device within the window, each further try from
    there waits a delay that doubles (1 s, 2 s, 4 s, … up to the window). A stranger
    guessing from elsewhere never locks the owner out of a known device, nor out of an
    IP with no failures.
    """
    try:
        address = normalise_email(email)
    except errors.InvalidRequest:
        address = email.strip().lower()
    account_key = _account_key(kit, address)
    source_key = _source_key(kit, account_key, source)
    await _lock_account_key(session, account_key)
    await _refuse_if_throttled(session, kit=kit, account_key=account_key, source_key=source_key)

    user = await session.scalar(select(User).where(User.email_index == email_index(kit, address)))
    valid = await kit.passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        session.add(LoginFailure(account_key=account_key, source_key=source_key))
        await record_event(session, user_id=user.id if user else None, kind="login_failed")
        raise InvalidCredentials()

    await session.execute(
        delete(LoginFailure).where(
            LoginFailure.account_key == account_key, LoginFailure.source_key == source_key
        )
    )
    if kit.passwords.needs_rehash(user.password_hash):
        user.password_hash = await kit.passwords.hash(password)
    device = _device_token(kit, account_key, source.device)
    fingerprint = device_fingerprint(kit, device)
    await record_event(session, user_id=user.id, kind="login", detail={"device": fingerprint or ""})
    pair = await sessions.start_session(session, kit=kit, user=user)
    return user, pair, device


def _device_token(kit: AuthKit, account_key: str, presented: str | None) -> str:
    """The device cookie's value: the one presented if it is this account's, else new."""
    if presented and _known_device(kit, account_key, presented):
        return presented
    device = secrets.token_urlsafe(16)
    return f"{device}.{keyed_hash(kit.account_key_secret, f'device:{account_key}:{device}')}"


def _known_device(kit: AuthKit, account_key: str, token: str) -> str | None:
    device, _, signature = token.partition(".")
    expected = keyed_hash(kit.account_key_secret, f"device:{account_key}:{device}")
    if device and hmac.compare_digest(signature.encode(), expected.encode()):
        return device
    return None


def _source_key(kit: AuthKit, account_key: str, source: LoginSource) -> str:
    """A device this account signed in from before counts apart from its IP."""
    device = _known_device(kit, account_key, source.device) if source.device else None
    where = f"device:{device}" if device else f"ip:{source.ip}"
    return keyed_hash(kit.account_key_secret, where)


async def _lock_account_key(session: AsyncSession, account_key: str) -> None:
    """Serialise logins for one account so parallel guesses cannot slip past the throttle.

    SQLite write transactions are already serial (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock on the account key.
    """
    if session.get_bind().dialect.name == "postgresql":
        lock_id = int(account_key[:15], 16)
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


async def _refuse_if_throttled(
    session: AsyncSession, *, kit: AuthKit, account_key: str, source_key: str
) -> None:
    window = timedelta(seconds=kit.settings.login_lockout_window_s)
    limit = kit.settings.login_max_failures
    now = utcnow()
    recent = (
        await session.scalars(
            select(LoginFailure.failed_at)
            .where(
                LoginFailure.account_key == account_key,
                LoginFailure.source_key == source_key,
                LoginFailure.failed_at > now - window,
            )
            .order_by(LoginFailure.failed_at.desc())
        )
    ).all()
    if len(recent) < limit:
        return
    delay = min(window, timedelta(seconds=2 ** min(len(recent) - limit, 30)))
    retry_at = recent[0] + delay
    if now < retry_at:
        retry_after = max(1, math.ceil((retry_at - now).total_seconds()))
        raise LoginLocked(headers={"Retry-After": str(retry_after)})


# --- authenticating requests ----------------------------------------------------------


async def authenticate(session: AsyncSession, *, kit: AuthKit, credential: str) -> Principal:
    """The caller, loaded into `session`: for a request that may change them."""
    if credential.startswith(API_KEY_PREFIX):
        return await authenticate_api_key(session, api_key=credential)
    return await sessions.authenticate_access_token(session, kit=kit, token=credential)


async def authenticate_reader(db: Database, *, kit: AuthKit, credential: str) -> Principal:
    """The caller of a read request, checked on a bare read connection, loaded together
    with the callers of the read requests that wait with it (`coalesce`). Their user
    comes back detached, their own."""
    if not credential.startswith(API_KEY_PREFIX):
        return await sessions.authenticate_reader(db, kit=kit, token=credential)
    found = await kit.key_callers.read(
        sha256_hex(credential), lambda hashes: _load_key_callers(db, hashes)
    )
    if found is None or not found.user_values["is_active"]:
        raise InvalidToken("Unknown API key.")
    return Principal(
        user=sessions.detached_user(found.user_values),
        via="api_key",
        scopes=found.scopes,
        api_key_id=found.key_id,
    )


API_KEY_WITH_USER = (
    select(ApiKey, User)
    .join(User, ApiKey.user_id == User.id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)
# The same query as plain columns, for a bare connection.
API_KEY_ROW_WITH_USER = (
    select(
        ApiKey.id.label("key_id"),
        ApiKey.scopes.label("key_scopes"),
        ApiKey.last_used_at.label("key_last_used_at"),
        *User.__table__.columns,
    )
    .join_from(ApiKey, User, ApiKey.user_id == User.id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)


async def authenticate_api_key(session: AsyncSession, *, api_key: str) -> Principal:
    """The key's owner, loaded into `session`."""
    row = (await session.execute(API_KEY_WITH_USER, {"key_hash": sha256_hex(api_key)})).first()
    if row is None or not row[1].is_active:
        raise InvalidToken("Unknown API key.")
    key, user = row
    await _touch_api_key(session, key.id, key.last_used_at)
    return Principal(user=user, via="api_key", scopes=frozenset(key.scopes), api_key_id=key.id)


async def _load_key_callers(db: Database, key_hashes: Sequence[str]) -> dict[str, KeyCaller]:
    """Key hash -> the key's owner, for the keys that exist; their use recorded."""
    found = {}
    async with db.reading() as connection:
        for key_hash in key_hashes:  # a statement each, on one connection
            params = {"key_hash": key_hash}
            if (row := (await connection.execute(API_KEY_ROW_WITH_USER, params)).first()) is None:
                continue
            found[key_hash] = KeyCaller(
                sessions.user_values(row._mapping), row.key_id, frozenset(row.key_scopes)
            )
            if row.is_active:
                await _touch_api_key(connection, row.key_id, row.key_last_used_at)
    return found


async def _touch_api_key(
    on: AsyncSession | AsyncConnection, key_id: str, last_used_at: datetime | None
) -> None:
    """Record use at most once a minute; a lost update here must never fail a request.

    On a GET (autocommit) the UPDATE is its own short transaction; on SQLite it may time
    out waiting for the write lock, which only loses this timestamp.
    """
    now = utcnow()
    if last_used_at is not None and now - last_used_at < API_KEY_TOUCH_INTERVAL:
        return
    try:
        await on.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    except OperationalError as exc:
        log.info("api_key_touch_skipped", key_id=key_id, error=str(exc.orig))


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


async def list_api_keys(
    session: AsyncSession, *, user: User, limit: int = 100, cursor: str | None = None
) -> tuple[list[ApiKey], str | None]:
    return await pages.newest_first(
        session,
        select(ApiKey).where(ApiKey.user_id == user.id),
        at=ApiKey.created_at,
        key=ApiKey.id,
        limit=limit,
        cursor=cursor,
    )


async def delete_api_key(session: AsyncSession, *, user: User, key_id: str) -> None:
    result = await session.execute(
        delete(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id)
    )
    if rowcount(result) == 0:
        raise errors.NotFound("No such API key.")
    await record_event(session, user_id=user.id, kind="api_key_deleted", detail={"key_id": key_id})


# --- roles -----------------------------------------------------------------------------


async def set_plan(session: AsyncSession, *, user_id: str, plan: str) -> None:
    """The plan a user is on (billing decides it from their subscription); it sets
    their rate limit from the next request on."""
    await session.execute(update(User).where(User.id == user_id).values(plan=plan))


async def set_role(session: AsyncSession, *, user: User, role: str, actor: str) -> bool:
    """Give `user` the role `role`, recorded in the audit log as done by `actor`; False
    when they had it already. Takes effect on their next request (roles are read per
    request, not carried in tokens)."""
    if role not in (ROLE_USER, ROLE_ADMIN):
        raise errors.InvalidRequest(f"No such role: {role}.", field="role")
    if user.role == role:
        return False
    previous, user.role = user.role, role
    await audit.record(
        session,
        actor=actor,
        action="role_changed",
        object_id=user.id,
        detail={"from": previous, "to": role},
    )
    await session.flush()
    return True


# --- admin -----------------------------------------------------------------------------


async def has_admin(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().where(User.role == ROLE_ADMIN))))
