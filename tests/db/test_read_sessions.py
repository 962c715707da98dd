"""A read session gives its connection back however it ends; one never used (most
authenticated GETs' sessions) never takes one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from levqor.bootstrap import build_runtime
from levqor.db.engine import Database


async def failing_read(db: Database) -> None:
    async with db.session(write=False) as session:
        await session.execute(text("SELECT 1"))
        raise LookupError("the route failed")


async def test_a_read_session_gives_its_connection_back_however_it_ends(
    make_settings: Any, fresh_database: None
) -> None:
    runtime = build_runtime(make_settings(db_pool_size=1))
    db = runtime.db
    try:
        # A pool of one: a session that kept its connection would stall the next one.
        async with asyncio.timeout(10):
            for _ in range(3):
                async with db.session(write=False) as session:
                    assert (await session.execute(text("SELECT 1"))).scalar() == 1
            for _ in range(3):
                with pytest.raises(LookupError):
                    await failing_read(db)
            async with db.session(write=False) as session:
                pass
            assert db.read_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            async with db.session(write=False) as session:
                assert (await session.execute(text("SELECT 2"))).scalar() == 2
    finally:
        await runtime.close()
