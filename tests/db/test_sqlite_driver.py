"""On SQLite each statement is one hand-over to the driver's thread (`db.sqlite_driver`),
not four, and what SQLAlchemy reads from the cursor afterwards is all there."""

from __future__ import annotations

from typing import Any

import aiosqlite
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from levqor.accounts.models import User
from levqor.runtime import Runtime


@pytest.fixture
def hops(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    if not runtime.db.is_sqlite:
        pytest.skip("SQLite only")
    calls: list[Any] = []
    run: Any = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await run(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_read_is_one_hop_and_its_rows_arrive(runtime: Runtime, hops: list[Any]) -> None:
    async with runtime.db.reading() as connection:
        await connection.execute(text("SELECT 1"))  # the pool has its connection now
        hops.clear()
        rows = (await connection.execute(text("SELECT 1 AS a, 'x' AS b UNION SELECT 2, 'y'"))).all()
        assert len(hops) == 1
    assert [tuple(row) for row in rows] == [(1, "x"), (2, "y")]
    assert rows[0]._fields == ("a", "b")  # the description came along


async def test_a_write_transaction_is_begin_statement_commit(
    runtime: Runtime, hops: list[Any]
) -> None:
    async with runtime.db.transaction() as connection:
        await connection.execute(text("SELECT 1"))
    hops.clear()
    async with runtime.db.transaction() as connection:
        inserted = await connection.execute(
            insert(User).values(email="a@example.com", email_index="ix-a", password_hash="h")
        )
        assert inserted.rowcount == 1
    assert len(hops) == 3  # BEGIN IMMEDIATE, the insert, COMMIT
    async with runtime.db.read() as session:
        assert await session.scalar(select(User.email).where(User.email_index == "ix-a")) == (
            "a@example.com"
        )


async def test_a_refused_statement_raises_sqlalchemys_error_and_changes_nothing(
    runtime: Runtime, hops: list[Any]
) -> None:
    row = {"email": "b@example.com", "email_index": "ix-b", "password_hash": "h"}
    async with runtime.db.transaction() as connection:
        await connection.execute(insert(User).values(**row))

    async def insert_two() -> None:
        async with runtime.db.transaction() as connection:
            await connection.execute(insert(User).values(**(row | {"email_index": "ix-c"})))
            await connection.execute(insert(User).values(**row))  # the same index again

    with pytest.raises(IntegrityError):
        await insert_two()
    async with runtime.db.read() as session:
        indexes = list(await session.scalars(select(User.email_index)))
    assert indexes == ["ix-b"]  # the first insert of the failed transaction was undone
