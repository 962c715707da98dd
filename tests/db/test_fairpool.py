"""A request waiting for a pooled connection gets the next one handed back, before any
request that asked after it; a waiter that gives up (cancelled, timed out) leaves the
line without taking or losing a connection. On both back-ends, through the engines the
product builds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from levqor.db.engine import make_engine


@pytest.fixture
async def engine(make_settings: Any, fresh_database: None) -> AsyncIterator[AsyncEngine]:
    """The read engine with a pool of one connection."""
    built = make_engine(make_settings(db_pool_size=1), autocommit=True)
    yield built
    await built.dispose()


async def checkout(engine: AsyncEngine) -> AsyncConnection:
    return await engine.connect()


async def waiting(engine: AsyncEngine, waiters: int) -> None:
    """Until `waiters` checkouts are queued on the pool (which has no event to wait on:
    each loop pass lets the tasks started before run up to their wait)."""
    line = engine.pool._pool._waiters  # type: ignore[attr-defined]
    async with asyncio.timeout(10):
        while len(line) < waiters:  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_a_returned_connection_goes_to_the_longest_waiter(engine: AsyncEngine) -> None:
    served: list[str] = []

    async def query(name: str) -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            served.append(name)

    holder = await engine.connect()
    first = asyncio.create_task(query("first waiter"))
    await waiting(engine, 1)
    second = asyncio.create_task(query("second waiter"))
    await waiting(engine, 2)

    # Hand the connection back and ask for one in the same step, before the woken
    # waiter runs: on asyncio's queue the newcomer took it and the waiter waited again.
    await holder.close()
    late = await asyncio.wait_for(engine.connect(), 10)
    served.append("newcomer")
    await late.close()
    await asyncio.wait_for(asyncio.gather(first, second), 10)

    assert served == ["first waiter", "second waiter", "newcomer"]


async def test_a_cancelled_waiter_leaves_the_line_and_loses_no_connection(
    engine: AsyncEngine,
) -> None:
    holder = await engine.connect()
    gave_up = asyncio.create_task(checkout(engine))
    await waiting(engine, 1)
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    await holder.close()

    async with asyncio.timeout(10), engine.connect() as connection:
        assert await connection.scalar(text("SELECT 1")) == 1
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_waiter_cancelled_as_it_is_served_passes_the_connection_on(
    engine: AsyncEngine,
) -> None:
    holder = await engine.connect()
    doomed = asyncio.create_task(checkout(engine))
    await waiting(engine, 1)
    patient = asyncio.create_task(checkout(engine))
    await waiting(engine, 2)

    await holder.close()  # the connection is handed to `doomed`, which has not run yet
    doomed.cancel()
    connection = await asyncio.wait_for(patient, 10)
    assert await connection.scalar(text("SELECT 1")) == 1
    await connection.close()
    assert doomed.cancelled()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_waiter_times_out_with_sqlalchemys_error_and_the_line_moves_on(
    make_settings: Any, fresh_database: None
) -> None:
    engine = make_engine(make_settings(db_pool_size=1), autocommit=True)
    engine.pool._timeout = 0.05  # type: ignore[attr-defined]
    try:
        holder = await engine.connect()
        with pytest.raises(PoolTimeout):
            await engine.connect()
        await holder.close()
        async with asyncio.timeout(10), engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()
