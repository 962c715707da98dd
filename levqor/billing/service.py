"""Billing logic: the credit balance and its ledger.

Every change to `users.credits` writes a ledger row in the same transaction (or the same
statement, on the webhook hot path), so the ledger always explains the balance:
the sum of a user's deltas is their balance. The balance sits on the users row, read
on every run's hot path, but only billing changes it (accounts sets its opening value).
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from sqlalchemy import (
    CTE,
    Insert,
    Integer,
    Table,
    Update,
    bindparam,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor import errors
from levqor.accounts.models import User
from levqor.billing.models import CreditEntry
from levqor.db.base import UTCDateTime, utcnow

SIGNUP_GRANT = "signup_grant"
RUN = "run"

ledger_table = cast(Table, CreditEntry.__table__)
users_table = cast(Table, User.__table__)


def short_of_credits(amount: int) -> errors.PaymentRequired:
    return errors.PaymentRequired(f"A run costs {amount} credits; your balance is too low.")


async def record_signup_grant(session: AsyncSession, *, user_id: str, credits: int) -> None:
    """The ledger row of the credits a new account starts with (its balance is set)."""
    if credits:
        session.add(
            CreditEntry(user_id=user_id, delta=credits, balance_after=credits, reason=SIGNUP_GRANT)
        )


async def charge_run(
    connection: AsyncSession | AsyncConnection, *, user_id: str, amount: int, job_id: str
) -> bool:
    """Take a run's credits and write its ledger row, in the caller's transaction;
    False, with nothing taken, when the balance is short or the account inactive."""
    debited = (
        await connection.execute(
            debit_statement(), {"debit_user_id": user_id, "debit_amount": amount}
        )
    ).first()
    if debited is None:
        return False
    if amount:
        await connection.execute(
            insert(ledger_table),
            {
                "user_id": user_id,
                "at": utcnow(),
                "delta": -amount,
                "balance_after": debited.credits,
                "reason": RUN,
                "job_id": job_id,
            },
        )
    return True


@cache
def debit_statement() -> Update:
    """Take `:debit_amount` credits from `:debit_user_id` if the balance covers them;
    returns the user's id and new balance if it did. Built once, with bound parameters,
    so the webhook intake can make it part of one larger statement."""
    users = users_table.c
    return (
        update(users_table)
        .where(
            users.id == bindparam("debit_user_id"),
            users.is_active.is_(True),  # a deactivated account starts nothing
            users.credits >= _AMOUNT,
        )
        .values(credits=users.credits - _AMOUNT)
        .returning(users.id, users.credits)
    )


_AMOUNT = bindparam("debit_amount", type_=Integer)


def run_entry_from(debit: CTE, *, job_id: Any) -> Insert:
    """The ledger row of a run, selected from a `debit_statement()` CTE: for a single
    statement that debits, records and queues at once (PostgreSQL). No row for a free
    run."""
    source = select(
        debit.c.id,
        bindparam("ledger_at", type_=UTCDateTime),
        -_AMOUNT,
        debit.c.credits,
        literal(RUN),
        job_id,
    ).where(_AMOUNT > 0)
    columns = ["user_id", "at", "delta", "balance_after", "reason", "job_id"]
    return insert(ledger_table).from_select(columns, source)


async def ledger(
    session: AsyncSession, *, user_id: str, before: int | None = None, limit: int = 100
) -> list[CreditEntry]:
    """A user's ledger entries, newest first, `before` an entry id for the next page."""
    query = select(CreditEntry).where(CreditEntry.user_id == user_id)
    if before is not None:
        query = query.where(CreditEntry.id < before)
    rows = await session.scalars(query.order_by(CreditEntry.id.desc()).limit(limit))
    return list(rows)
