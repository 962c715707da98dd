"""The job writer's kept connection: one connection across its uses, given back when a
use fails, when it is old, and when the database is disposed; uses take turns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import DBAPIError

from levqor.db import engine as engine_module
from levqor.db.base import utcnow
from levqor.db.engine import unavailable
from levqor.jobs import queue
from levqor.jobs.models import WorkerBeat
from levqor.runtime import Runtime
from tests.factories import LEASE, seed


def checked_out(runtime: Runtime) -> int:
    return int(runtime.db.engine.pool.checkedout())  # type: ignore[attr-defined]


async def backend_of(runtime: Runtime) -> Any:
    """What identifies the server session a use ran in."""
    async with runtime.db.kept.use() as connection:
        if runtime.db.is_sqlite:
            raw = await connection.get_raw_connection()
            return id(raw.driver_connection)
        return await connection.scalar(text("SELECT pg_backend_pid()"))


async def test_uses_share_one_connection_whose_statements_commit_on_their_own(
    runtime: Runtime,
) -> None:
    async with runtime.db.kept.use() as first:
        pass
    assert checked_out(runtime) == 1  # held between uses, not given back
    now = datetime.now(UTC)
    async with runtime.db.kept.use() as again:
        assert again is first
        if not runtime.db.is_sqlite:  # (SQLite's writes go through `sqlite_write`)
            await again.execute(
                insert(WorkerBeat).values(
                    id="probe", host="h", pid=1, concurrency=1, started_at=now, heartbeat_at=now
                )
            )
            # committed already: another connection sees it while this one is still held
            async with runtime.db.reading() as other:
                assert await other.scalar(select(WorkerBeat.id)) == "probe"
    await runtime.db.dispose()
    assert not runtime.db.kept.held
    assert checked_out(runtime) == 0


async def test_a_failed_use_gives_the_connection_back_and_raises_its_own_error(
    runtime: Runtime,
) -> None:
    async with runtime.db.kept.use() as first:
        pass
    with pytest.raises(DBAPIError) as failed:
        async with runtime.db.kept.use() as connection:
            await connection.execute(text("SELECT * FROM no_such_table"))
    assert "no_such_table" in str(failed.value)
    assert not runtime.db.kept.held
    assert checked_out(runtime) == 0
    async with runtime.db.kept.use() as second:
        assert second is not first
        assert await second.scalar(text("SELECT 1")) == 1


async def test_a_connection_the_server_dropped_fails_one_use_only(runtime: Runtime) -> None:
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only: the server ends the session")
    victim = await backend_of(runtime)
    async with runtime.db.autocommit() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
    with pytest.raises(DBAPIError) as failed:
        await backend_of(runtime)
    assert unavailable(failed.value)  # what the worker treats as the database being away
    assert not runtime.db.kept.held
    assert await backend_of(runtime) not in (None, victim)


async def test_uses_take_turns(runtime: Runtime) -> None:
    order: list[str] = []
    first_inside = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with runtime.db.kept.use():
            order.append("first in")
            first_inside.set()
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        await first_inside.wait()
        async with runtime.db.kept.use():
            order.append("second in")

    async with asyncio.timeout(10):
        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await first_inside.wait()
        await asyncio.sleep(0)  # the second is waiting for its turn now
        release_first.set()
        await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]


async def test_an_old_connection_is_given_back_as_the_pool_would_recycle_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with runtime.db.kept.use() as first:
        pass
    monkeypatch.setattr(engine_module, "POOL_RECYCLE_S", -1)  # every connection is old now
    async with runtime.db.kept.use() as second:
        assert second is not first
    assert checked_out(runtime) == 1  # the old one went back to the pool


async def test_a_claim_alone_takes_its_turn_on_the_kept_connection(runtime: Runtime) -> None:
    """An idle worker's claim (no write going out to carry it) checks nothing out of
    the pool: it runs on the connection the worker's writes keep."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite claims in one hop on its driver's thread")
    await seed(runtime, users=1, jobs_each=1)
    async with runtime.db.kept.use() as connection:
        kept = (await connection.get_raw_connection()).driver_connection
    claimed_on: list[Any] = []

    def record(connection: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "SET status = 'running'" in sql:
            claimed_on.append(connection.connection.driver_connection)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    now = utcnow()
    request = queue.ClaimRequest(
        worker_id="w1",
        limit=5,
        lease=LEASE,
        now=now,
        max_running_per_user=10,
        concurrency=5,
        alive_since=now,
    )
    claimed = await queue.take_alone(runtime.db, request)
    assert len(claimed) == 1
    assert claimed_on == [kept]
