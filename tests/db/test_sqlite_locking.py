"""On SQLite a write transaction waits for another process's write lock on the event
loop, in steps of at most 2 ms (SQLite's own busy handler sleeps up to 100 ms at a time),
and gives up with SQLAlchemy's error once `sqlite_busy_timeout_ms` has passed."""

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
from levqor.db.engine import create_database


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


async def test_a_write_waits_for_another_processs_lock_then_commits(
    make_settings: Any, fresh_database: None
) -> None:
    settings = await prepared(make_settings)
    db = create_database(settings)

    async def write() -> None:
        async with db.transaction() as connection:
            await connection.execute(text("INSERT INTO lock_probe VALUES (1)"))

    try:
        with write_lock_held(settings) as release:
            writing = asyncio.create_task(write())
            await asyncio.sleep(0.05)
            assert not writing.done()  # it waits, and the event loop is free meanwhile
            release.set()
            await asyncio.wait_for(writing, timeout=5)
    finally:
        await db.dispose()
    assert await counted(settings) == 1


async def test_a_lock_held_past_the_busy_timeout_fails_the_write_cleanly(
    make_settings: Any, fresh_database: None
) -> None:
    settings = await prepared(make_settings, sqlite_busy_timeout_ms=100)
    db = create_database(settings)
    try:
        with write_lock_held(settings), pytest.raises(OperationalError, match="locked"):
            async with db.transaction() as connection:
                await connection.execute(text("INSERT INTO lock_probe VALUES (1)"))
        # The connection that gave up is fine for the next write.
        async with db.transaction() as connection:
            await connection.execute(text("INSERT INTO lock_probe VALUES (2)"))
    finally:
        await db.dispose()
    assert await counted(settings) == 1
