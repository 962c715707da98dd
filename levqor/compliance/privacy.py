"""Export (GDPR Art. 15 and 20) and erasure (Art. 17) of one user's data.

Both walk `registry.TABLES`, so a table added there is covered by both. Erasure runs in
the caller's one transaction: it fails whole or not at all.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Table, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts import service as accounts
from levqor.accounts.kit import AuthKit
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.billing import service as billing
from levqor.compliance import registry
from levqor.compliance import service as compliance
from levqor.compliance.registry import Owned, Via
from levqor.db.base import Sealed, new_id, utcnow
from levqor.db.models import metadata

if TYPE_CHECKING:
    from levqor.runtime import Runtime


async def export(session: AsyncSession, *, user: User, actor: str) -> dict[str, Any]:
    """Every record about `user`, from every personal table, secrets left out; the
    export itself goes in the audit log, made by `actor` (the user, or "system")."""
    document = await collect(session, user=user)
    await audit.record(session, actor=actor, action="data_exported", object_id=user.id)
    return document


async def count_rows(session: AsyncSession, *, user: User) -> int:
    """How many rows an export of `user` would hold, counted without reading them."""
    total = 0
    for *_, theirs in _selections(user.id):
        total += await session.scalar(select(func.count()).where(theirs)) or 0
    return total


async def collect(session: AsyncSession, *, user: User) -> dict[str, Any]:
    """The export document of `user`: read only, recorded by the caller."""
    data = {
        name: [
            _public(table, row._mapping)
            for row in await session.execute(select(table).where(theirs))
        ]
        for name, table, theirs in _selections(user.id)
    }
    return {
        "generated_at": utcnow().isoformat(),
        "user_id": user.id,
        "data": data,
        "about": registry.ABOUT,
    }


def _selections(user_id: str) -> list[tuple[str, Table, ColumnElement[bool]]]:
    """Each personal table with the condition picking the user's rows: their own (and
    those about them), then the rows hanging off those, by a subquery on the parent."""
    chosen: dict[str, tuple[Table, ColumnElement[bool]]] = {}
    for name, rule in registry.TABLES.items():
        if isinstance(rule, Owned) and rule.erase != "by_account_key":
            table = metadata.tables[name]
            chosen[name] = (table, _theirs(table, rule, user_id))
    for name, rule in registry.TABLES.items():
        if isinstance(rule, Via):
            table = metadata.tables[name]
            parent, parent_rows = chosen[rule.parent]
            keys = select(parent.c[rule.parent_key]).where(parent_rows)
            chosen[name] = (table, table.c[rule.column].in_(keys))
    return [(name, table, theirs) for name, (table, theirs) in chosen.items()]


def _theirs(table: Table, rule: Owned, user_id: str) -> ColumnElement[bool]:
    """Rows by the user, or about them (`rule.about`)."""
    return or_(*(table.c[name] == user_id for name in (rule.column, *rule.about)))


def _public(table: Table, row: Any) -> dict[str, Any]:
    """A row as the user reads it: sealed personal data in clear, under its plain name
    (`email`, not `email_encrypted`); secrets and blind indexes left out."""
    return {
        _name(column): _plain(row[column.name])
        for column in table.columns
        if column.name not in registry.SECRET_COLUMNS
    }


def _name(column: Any) -> str:
    name = str(column.name)
    return name.removesuffix("_encrypted") if isinstance(column.type, Sealed) else name


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


ERASED = audit.ERASED


class WrongPassword(errors.Forbidden):
    """That is not the account's password."""

    code = "wrong_password"


async def erase_account(runtime: Runtime, *, user_id: str, password: str | None) -> str:
    """Erasure from end to end; the tombstone id of its receipt.

    The user's own request needs their current password (`password`; an operator's
    passes None). Stripe subscriptions are cancelled first, outside any transaction: if
    Stripe fails, nothing is erased and the request can be repeated (a subscription
    already cancelled counts as done); then everything here goes in one transaction.
    """
    async with runtime.db.session(write=False) as session:
        user = await session.get(User, user_id)
    if user is None:
        raise errors.NotFound("No such account.")
    if password is not None and not await runtime.auth.passwords.verify(
        user.password_hash, password
    ):
        raise WrongPassword()
    cancelled = await billing.cancel_subscriptions(runtime, user_id=user_id)
    async with runtime.db.session(write=True) as session, session.begin():
        user = await session.get(User, user_id)
        if user is None:
            raise errors.NotFound("No such account.")
        return await erase(session, user=user, kit=runtime.auth, cancelled=cancelled)


async def erase(
    session: AsyncSession, *, user: User, kit: AuthKit, cancelled: list[str] | None = None
) -> str:
    """Delete everything personal about `user`; the tombstone id of the receipt.

    The address goes on the global suppression list first (by blind index, never in
    clear), so it is never mailed again; tokens, keys, credentials, workflows and runs go
    with the user row (foreign keys cascade); login failures are keyed by a hash of the
    address and deleted by it; the audit log keeps its pseudonymous rows; money records
    (the credit ledger) stay, under the tombstone id instead of the user's.
    """
    tombstone = new_id("tomb")
    key = kit.settings.blind_index_key
    assert key is not None  # load_settings always fills it
    await compliance.suppress(
        session, key=key.get_secret_value(), user_id=None, address=user.email, reason="erased"
    )
    for name, rule in registry.TABLES.items():
        if isinstance(rule, Owned) and rule.erase == "pseudonymise":
            table = metadata.tables[name]
            await session.execute(
                update(table)
                .where(table.c[rule.column] == user.id)
                .values({rule.column: tombstone})
            )
    await accounts.delete_account(session, kit=kit, user=user)
    await audit.record(
        session,
        actor="system",
        action=ERASED,
        object_id=user.id,
        detail={"tombstone": tombstone, "subscriptions_cancelled": cancelled or []},
    )
    return tombstone
