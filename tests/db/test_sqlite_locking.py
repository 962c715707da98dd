"""On SQLite a write transaction waits for another process's write lock on the event
loop, in steps of at most 2 ms (SQLite's own busy handler sleeps up to 100 ms at a time),
and gives up with SQLAlchemy's error once `sqlite_busy_timeout_ms` has passed: through
SQLAlchemy (`db.transaction`) and on the driver's thread in one hop (`db.sqlite_write`,
the queue's hot path) alike."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from levqor.config import Settings
from levqor.db.engine import Database, create_database


@contextmanager
def write_lock_held(settings: Settings) -> Iterator[threading.Event]:
    """Another connection (another process, as far as SQLite can tell) holds the write
    lock until the event is set."""
    path = settings.data_dir / "levqor.db"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


async def counted(settings: Settings) -> int:
    db = create_database(settings)
    try:
        async with db.read() as session:
            return int(await session.scalar(text("SELECT count(*) FROM lock_probe")) or 0)
    finally:
        await db.dispose()


async def prepared(make_settings: Any, **overrides: Any) -> Settings:
    settings: Settings = make_settings(**overrides)
    if not settings.is_sqlite:
        pytest.skip("SQLite only")
    db = create_database(settings)
    async with db.transaction() as connection:
        await connection.execute(text("CREATE TABLE lock_probe (n integer)"))
    await db.dispose()
    return settings


async def insert_in_a_transaction(db: Database, n: int) -> None:
    async with db.transaction() as connection:
        await connection.execute(text("INSERT INTO lock_probe VALUES (:n)"), {"n": n})


async def insert_in_one_hop(db: Database, n: int) -> None:
    await db.sqlite_write(
        lambda connection: connection.execute("INSERT INTO lock_probe VALUES (?)", (n,))
    )


WRITES = pytest.mark.parametrize("insert", [insert_in_a_transaction, insert_in_one_hop])


@WRITES
async def test_a_write_waits_for_another_processs_lock_then_commits(
    make_settings: Any, fresh_database: None, insert: Any
) -> None:
    settings = await prepared(make_settings)
    db = create_database(settings)
    try:
        with write_lock_held(settings) as release:
            writing = asyncio.create_task(insert(db, 1))
            await asyncio.sleep(0.05)
            assert not writing.done()  # it waits, and the event loop is free meanwhile
            release.set()
            await asyncio.wait_for(writing, timeout=5)
    finally:
        await db.dispose()
    assert await counted(settings) == 1


@WRITES
async def test_a_lock_held_past_the_busy_timeout_fails_the_write_cleanly(
    make_settings: Any, fresh_database: None, insert: Any
) -> None:
    settings = await prepared(make_settings, sqlite_busy_timeout_ms=100)
    db = create_database(settings)
    try:
        with write_lock_held(settings), pytest.raises(OperationalError, match="locked"):
            await insert(db, 1)
        # The connection that gave up is fine for the next write.
        await insert(db, 2)
    finally:
        await db.dispose()
    assert await counted(settings) == 1


async def test_a_write_that_fails_on_the_driver_thread_is_rolled_back_whole(
    make_settings: Any, fresh_database: None
) -> None:
    settings = await prepared(make_settings)
    db = create_database(settings)

    def half_then_fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO lock_probe VALUES (1)")
        connection.execute("INSERT INTO no_such_table VALUES (2)")

    try:
        with pytest.raises(OperationalError, match="no such table"):  # SQLAlchemy's error
            await db.sqlite_write(half_then_fail)
        await insert_in_one_hop(db, 3)  # the lock was let go, the connection is fine
    finally:
        await db.dispose()
    assert await counted(settings) == 1
