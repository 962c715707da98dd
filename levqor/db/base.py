"""Declarative base and the column types every package shares."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any, cast

from cryptography.fernet import MultiFernet
from sqlalchemy import DateTime, MetaData, Text, func, text
from sqlalchemy.engine import CursorResult, Dialect, Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Column info marking a value sealed with the key ring: `levqor keys rotate` re-encrypts
# every column so marked, and a test refuses an `*_encrypted` column without it.
ENCRYPTED: dict[str, object] = {"encrypted": True}


class Sealed(TypeDecorator[str]):
    """Text encrypted at rest with the process's key ring (MultiFernet), in clear in
    Python: for personal data such as e-mail addresses and names. Such a column cannot
    be searched; pair it with a blind index column when it must be looked up."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else key_ring(dialect).encrypt(value.encode()).decode()

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else key_ring(dialect).decrypt(value.encode()).decode()


# Each engine has its own dialect object: the key ring rides on it, so a sealed column
# finds the ring of the database it is read from, with no process-wide global.
_KEY_RING = "levqor_key_ring"


def bind_key_ring(dialect: Dialect, ring: MultiFernet) -> None:
    setattr(dialect, _KEY_RING, ring)


def key_ring(dialect: Dialect) -> MultiFernet:
    ring: MultiFernet | None = getattr(dialect, _KEY_RING, None)
    if ring is None:
        raise RuntimeError("this engine has no key ring: build it with create_database()")
    return ring


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zone type and hands back naive values; this makes both directions
    explicit so no naive datetime ever leaves the database layer.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A public id: `prefix_` + 24 lowercase base32 characters (120 random bits)."""
    token = base64.b32encode(secrets.token_bytes(15)).decode().lower()
    return f"{prefix}_{token}"


def upsert(dialect: str, table: Any) -> Any:
    """`INSERT … ON CONFLICT` for `dialect`; PostgreSQL's dialect module (tens of ms and
    MiB) is loaded only where it is used, so `levqor up` on SQLite never pays for it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


async def serialise(session: AsyncSession, name: str) -> None:
    """Hold `name` until the transaction ends, so code under the same name runs one at a
    time across processes: a transaction-scoped advisory lock on PostgreSQL. SQLite's
    write transactions are serial already (BEGIN IMMEDIATE), so there it does nothing."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE, DELETE or INSERT matched. `session.execute` is typed as
    returning `Result`, but for these statements it is a `CursorResult`, which has it."""
    return int(cast("CursorResult[Any]", result).rowcount)


def utc_day(column: Any, dialect: str) -> Any:
    """A timestamp column's UTC calendar day as 'YYYY-MM-DD', for GROUP BY: SQLite keeps
    UTC text (its date() reads it), PostgreSQL converts from timestamptz."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)


def utc_hour(column: Any, dialect: str) -> Any:
    """A timestamp column's UTC hour as 'YYYY-MM-DD HH', for GROUP BY (see `utc_day`)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)
